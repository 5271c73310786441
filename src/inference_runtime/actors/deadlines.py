"""Ask timeouts without one event-loop timer per ask.

Asks with the same timeout expire in the order they were made, so each distinct timeout value
keeps a FIFO of (deadline, reply) and one loop timer for its head. Answered asks are dropped
lazily. This saves the ``call_later`` + ``cancel`` pair that otherwise costs a third of an
ask's round trip.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

from inference_runtime.errors import AskTimeout

_Entry = tuple[float, "asyncio.Future[Any]", str, object]


class _Lane:
    __slots__ = ("compact_at", "entries", "handle")

    def __init__(self) -> None:
        self.entries: deque[_Entry] = deque()
        self.handle: asyncio.TimerHandle | None = None
        self.compact_at = 64


class AskDeadlines:
    """All pending ask deadlines of one event loop, one lane per timeout value."""

    __slots__ = ("_lanes", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lanes: dict[float, _Lane] = {}

    def add(self, timeout: float, reply: asyncio.Future[Any], path: str, message: object) -> None:
        lane = self._lanes.get(timeout)
        if lane is None:
            lane = self._lanes[timeout] = _Lane()
        entries = lane.entries
        while entries and entries[0][1].done():
            entries.popleft()
        entries.append((self._loop.time() + timeout, reply, path, message))
        if lane.handle is None:
            lane.handle = self._loop.call_at(entries[0][0], self._expire, timeout)
        elif len(entries) > lane.compact_at:
            # an old ask that never answers pins the head; drop answered ones behind it
            lane.entries = deque(e for e in entries if not e[1].done())
            lane.compact_at = max(64, 2 * len(lane.entries))

    def _expire(self, timeout: float) -> None:
        lane = self._lanes[timeout]
        lane.handle = None
        entries = lane.entries
        now = self._loop.time()
        while entries:
            deadline, reply, path, message = entries[0]
            if reply.done():
                entries.popleft()
                continue
            if deadline > now:
                break
            entries.popleft()
            reply.set_exception(AskTimeout(path, timeout, message))
        if entries:
            lane.handle = self._loop.call_at(entries[0][0], self._expire, timeout)
        else:
            del self._lanes[timeout]

    def __len__(self) -> int:
        return sum(len(lane.entries) for lane in self._lanes.values())
