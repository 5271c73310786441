"""``Deadline``: one timer that cuts the current task's wait, moved as an upstream call goes on.

What ``asyncio.timeout`` does, for the one pattern an upstream call needs (a deadline for the
first byte, then one per read), with the same rule for telling a timeout from a cancellation:
the timer cancels the task, and only when that cancellation is the last one pending
(``uncancel``) does it become a ``TimeoutError``; a cancellation from outside (the client went
away, an abort) stays a ``CancelledError``. It is an object with three methods and one timer
handle instead of a context manager's state machine: every proxied request makes one.
"""

from __future__ import annotations

import asyncio


class Deadline:
    """Use as ``with Deadline(when) as deadline:``; ``move`` sets a new time."""

    __slots__ = ("_cancelling", "_handle", "_loop", "_task", "expired")

    def __init__(self, when: float) -> None:
        self._loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("a Deadline needs a task")
        self._task = task
        self._cancelling = task.cancelling()
        self.expired = False
        self._handle = self._loop.call_at(when, self._expire)

    def move(self, when: float) -> None:
        """Expire at ``when`` instead (from now on; an expired deadline stays expired)."""
        if not self.expired:
            self._handle.cancel()
            self._handle = self._loop.call_at(when, self._expire)

    def _expire(self) -> None:
        self.expired = True
        self._task.cancel()

    def __enter__(self) -> Deadline:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: object
    ) -> None:
        self._handle.cancel()
        if (
            self.expired
            and kind is asyncio.CancelledError
            and self._task.uncancel() <= self._cancelling
        ):
            raise TimeoutError from error
