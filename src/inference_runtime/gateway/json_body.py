"""Decoding a request's JSON with a bound on how deep it nests.

msgspec decodes (and skips unknown fields) recursively, so a value nested a thousand deep raises
``RecursionError`` mid-decode; a shallower one that still decodes would raise it later, in code
that walks or re-encodes it (masking an admin spec, passing fields through to a provider). Every
body is decoded here: too deep is the request's 400, never a 500.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import msgspec

from inference_runtime.errors import RequestError

T = TypeVar("T")

MAX_DEPTH = 64
"""Arrays and objects nested deeper than this are refused (a JSON schema in ``tools`` or
``response_format`` nests a dozen levels; nothing legitimate comes near this)."""

_CONTAINERS = (dict, list, tuple, msgspec.Struct)


def too_deep() -> RequestError:
    return RequestError(f"the request body nests JSON deeper than {MAX_DEPTH} levels")


def decode(body: bytes, decoder: Callable[[bytes], T] = msgspec.json.decode) -> T:
    """``decoder(body)``, refused when the JSON nests deeper than :data:`MAX_DEPTH`."""
    try:
        value = decoder(body)
    except RecursionError:
        raise too_deep() from None
    # fewer opening brackets than the bound cannot nest past it: most bodies skip the walk
    if body.count(b"[") + body.count(b"{") > MAX_DEPTH and _depth_over(value, MAX_DEPTH):
        raise too_deep()
    return value


def _children(value: Any) -> Any:
    if isinstance(value, dict):
        return value.values()
    if isinstance(value, list | tuple):
        return value
    return (getattr(value, field) for field in value.__struct_fields__)


def _depth_over(value: Any, limit: int) -> bool:
    """Whether containers nest deeper than ``limit`` (iterative: it must not recurse itself)."""
    stack = [(value, 1)] if _is_container(value) else []
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in _children(item) if _is_container(child))
    return False


def _is_container(value: Any) -> bool:
    return isinstance(value, _CONTAINERS)
