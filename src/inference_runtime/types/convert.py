"""``typed``: one mapping (YAML, JSON, a ``runtime_config``) as its typed struct, with errors
that say what was read and name the field."""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

T = TypeVar("T")


def typed(data: Any, cls: type[T], *, what: str) -> T:
    """``data`` as a ``cls``; ``ValueError("<what>: <msgspec's words, naming the field>")``
    otherwise (the struct's own ``__post_init__`` checks raise theirs unchanged)."""
    try:
        return msgspec.convert(data, cls)
    except msgspec.ValidationError as error:
        raise ValueError(f"{what}: {error}") from None
