"""The time source of an actor system: restart windows, backoff and timers read it.

Production uses the event loop's monotonic clock. Tests inject ``testing.ManualClock`` so that
restart windows and timers advance only when the test says so.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, Protocol


class Cancellable(Protocol):
    """A scheduled callback that can be called off."""

    def cancel(self) -> None: ...


class Clock(Protocol):
    """Seconds on a monotonic scale, and callbacks at a later point on that scale."""

    def now(self) -> float:
        """The current time in seconds (monotonic; only differences mean anything)."""
        ...

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> Cancellable:
        """Run ``callback(*args)`` on the event loop after ``delay`` seconds of this clock."""
        ...


class LoopClock:
    """The running event loop's clock (``loop.time()``, ``loop.call_later``)."""

    __slots__ = ("_loop",)

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def now(self) -> float:
        return self._loop.time()

    def call_later(
        self, delay: float, callback: Callable[..., Any], *args: Any
    ) -> asyncio.TimerHandle:
        return self._loop.call_later(max(0.0, delay), callback, *args)
