"""Timers that send messages to their own actor; all cancelled when the actor stops or restarts."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable

from inference_runtime.actors.clock import Cancellable, Clock

_anonymous_keys = itertools.count()


class TimerHandle:
    """One scheduled (possibly repeating) timer."""

    __slots__ = ("_handle", "_owner", "interval", "key", "message")

    def __init__(
        self, owner: Timers, key: Hashable, message: object, interval: float | None
    ) -> None:
        self._owner = owner
        self._handle: Cancellable | None = None
        self.key = key
        self.message = message
        self.interval = interval

    @property
    def active(self) -> bool:
        return self._handle is not None

    def cancel(self) -> None:
        self._owner.cancel(self.key, only=self)


class Timers:
    """The timers of one actor, keyed; a new timer with an existing key replaces the old one."""

    __slots__ = ("_clock", "_deliver", "_timers")

    def __init__(self, clock: Clock, deliver: Callable[[object], None]) -> None:
        self._clock = clock
        self._deliver = deliver
        self._timers: dict[Hashable, TimerHandle] = {}

    def schedule(
        self, key: Hashable | None, delay: float, message: object, *, interval: float | None
    ) -> TimerHandle:
        if delay < 0 or (interval is not None and interval <= 0):
            raise ValueError("timer delay must be >= 0 and interval > 0")
        if key is None:
            key = ("$timer", next(_anonymous_keys))
        self.cancel(key)
        timer = TimerHandle(self, key, message, interval)
        timer._handle = self._clock.call_later(delay, self._fire, timer)
        self._timers[key] = timer
        return timer

    def cancel(self, key: Hashable, *, only: TimerHandle | None = None) -> None:
        timer = self._timers.get(key)
        if timer is None or (only is not None and timer is not only):
            return
        del self._timers[key]
        if timer._handle is not None:
            timer._handle.cancel()
            timer._handle = None

    def cancel_all(self) -> None:
        for key in list(self._timers):
            self.cancel(key)

    def __len__(self) -> int:
        return len(self._timers)

    def _fire(self, timer: TimerHandle) -> None:
        if self._timers.get(timer.key) is not timer:
            return
        if timer.interval is None:
            del self._timers[timer.key]
            timer._handle = None
        else:
            timer._handle = self._clock.call_later(timer.interval, self._fire, timer)
        self._deliver(timer.message)
