"""``ManualClock``: time that moves only when a test says so."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any


class ManualHandle:
    __slots__ = ("args", "callback", "cancelled", "when")

    def __init__(self, when: float, callback: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.when = when
        self.callback = callback
        self.args = args
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """A ``Clock`` for tests: ``advance(seconds)`` runs, in time order, every callback that falls
    due. Pass it to ``ActorSystem.create(clock=...)`` to drive restart windows, backoff and timers.
    """

    def __init__(self, start: float = 0.0) -> None:
        self._now = start
        self._heap: list[tuple[float, int, ManualHandle]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any) -> ManualHandle:
        handle = ManualHandle(self._now + max(0.0, delay), callback, args)
        heapq.heappush(self._heap, (handle.when, next(self._seq), handle))
        return handle

    def advance(self, seconds: float) -> int:
        """Move time forward and run the callbacks due by then; returns how many ran."""
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        target = self._now + seconds
        ran = 0
        while self._heap and self._heap[0][0] <= target:
            when, _, handle = heapq.heappop(self._heap)
            self._now = max(self._now, when)
            if not handle.cancelled:
                handle.callback(*handle.args)
                ran += 1
        self._now = target
        return ran

    @property
    def pending(self) -> int:
        return sum(1 for _, _, handle in self._heap if not handle.cancelled)
