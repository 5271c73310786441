"""What crosses the boundary between the head and a replica's Ray actor, besides plain data.

Errors travel encoded, not pickled: several of the runtime's errors take keyword-only or
computed constructor arguments that ``pickle`` cannot replay, and Ray would wrap them in its own
``RayTaskError`` anyway. An error is sent as (module, class name, message, plain attributes) and
rebuilt as the same class on the other side, so the gateway maps it as if it were raised here
(a ``Backpressure`` keeps its ``retry_after``, a ``RequestError`` its ``param``).

Event kinds of a generation stream (``EngineHost.generate``): the first item is ``ADMITTED``
(with the prompt tokens and the events of a first step quick enough to come along) or
``REFUSED`` (with the error); then lists of ``CHUNK`` / ``FINISH`` / ``ERROR`` events, all
those produced since the last item (one engine step's, or several when the head reads slower
than the engine steps), so a step costs at most one item whatever the number of choices.
"""

from __future__ import annotations

import contextlib
import importlib
from dataclasses import dataclass
from typing import Any

from inference_runtime.errors import InferenceRuntimeError, ReplicaFailed

ADMITTED, REFUSED = "admitted", "refused"
CHUNK, FINISH, ERROR = 0, 1, 2
RESULT, FAILED = "result", "failed"

EncodedError = tuple[str, str, str, dict[str, Any]]
CallId = tuple[str, int]
"""A generation call on a host: (the calling proxy's token, its counter): unique across the
proxies of every gateway that sends to the host."""
_PLAIN = (str, int, float, bool, type(None))


@dataclass(frozen=True, slots=True)
class Down:
    """The replica's engine was taken out inside its Ray actor (supervision gave up on it)."""

    reason: str


def _plain(value: Any) -> bool:
    if isinstance(value, _PLAIN):
        return True
    return isinstance(value, tuple) and all(_plain(v) for v in value)


def encode_error(error: BaseException) -> EncodedError:
    cls = type(error)
    attrs = {k: v for k, v in getattr(error, "__dict__", {}).items() if _plain(v)}
    return (cls.__module__, cls.__qualname__, str(error), attrs)


def decode_error(data: EncodedError) -> BaseException:
    """The same class when it is one of the runtime's errors or a builtin exception; any other
    error (a bug on the far side) arrives as a ``RuntimeError`` naming it."""
    module, name, message, attrs = data
    cls: Any = None
    if module.startswith("inference_runtime.") or module == "builtins":
        try:
            cls = getattr(importlib.import_module(module), name, None)
        except ImportError:
            cls = None
    if not (isinstance(cls, type) and issubclass(cls, BaseException)):
        return RuntimeError(f"{module}.{name}: {message}")
    if cls.__module__ == "builtins" and not issubclass(cls, Exception):
        return RuntimeError(f"{name}: {message}")
    error: BaseException = cls.__new__(cls)
    error.args = (message,)
    for key, value in attrs.items():
        with contextlib.suppress(AttributeError):
            setattr(error, key, value)
    return error


def actor_lost(replica_id: str, error: BaseException) -> ReplicaFailed:
    """The retryable error requests get when the replica's Ray actor (or its node) is gone."""
    return ReplicaFailed(f"replica {replica_id}: its Ray actor was lost ({describe(error)})")


def describe(error: BaseException) -> str:
    """One line for a Ray error (their ``str`` spans many lines of traceback)."""
    if isinstance(error, InferenceRuntimeError):
        return str(error)
    text = str(error).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(error).__name__}: {first}"[:300]


__all__ = [
    "ADMITTED",
    "CHUNK",
    "ERROR",
    "FAILED",
    "FINISH",
    "REFUSED",
    "RESULT",
    "CallId",
    "Down",
    "EncodedError",
    "actor_lost",
    "decode_error",
    "describe",
    "encode_error",
]
