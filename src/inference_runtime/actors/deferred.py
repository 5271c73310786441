"""``Deferred``: an answer to an ``ask`` that comes later, without holding the mailbox."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any


class Deferred:
    """Return ``Deferred(awaitable)`` from ``receive`` to answer the ask with what ``awaitable``
    gives (or raises) once it completes, while the actor takes its next messages at once.

    For an actor that forwards a request to something slow (a round trip to another process)
    and must not serialise those round trips. The awaitable runs beside the actor, not in it:
    what it raises answers the ask and is not a failure of the actor (no supervision); it is
    cancelled, and the ask fails with ``ActorStopped``, when the actor stops. A ``Deferred``
    returned for a ``tell`` still runs; its result is dropped."""

    __slots__ = ("awaitable",)

    def __init__(self, awaitable: Awaitable[Any]) -> None:
        self.awaitable = awaitable
