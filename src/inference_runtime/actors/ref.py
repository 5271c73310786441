"""``ActorRef``: the only handle the world gets on an actor."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from inference_runtime.actors.cell import ActorCell

DEFAULT_ASK_TIMEOUT = 30.0
"""Seconds an ``ask`` waits when the caller gives no timeout."""


@dataclass(frozen=True, slots=True)
class ActorStatistics:
    """A snapshot of one actor."""

    path: str
    alive: bool
    mailbox_depth: int
    processed: int
    failures: int
    restarts: int
    children: int
    timers: int


class ActorRef:
    """Send messages to an actor with :meth:`tell` (fire and forget) or :meth:`ask` (await the
    answer). Refs are hashable and compare equal only for the same incarnation of a path."""

    __slots__ = ("_cell", "path", "uid")

    def __init__(self, cell: ActorCell, path: str, uid: int) -> None:
        self._cell = cell
        self.path = path
        self.uid = uid

    @property
    def name(self) -> str:
        return self._cell.name

    def tell(self, message: object, sender: ActorRef | None = None) -> None:
        """Queue ``message``; never blocks. Raises ``MailboxFull`` on a full bounded mailbox.
        A message to a stopped actor goes to the system's dead letters."""
        self._cell.tell(message, sender)

    async def ask(self, message: object, *, timeout: float | None = DEFAULT_ASK_TIMEOUT) -> Any:
        """Send ``message`` and await what ``receive`` returns (or raises).

        Raises ``AskTimeout`` after ``timeout`` seconds (``None``: wait as long as the actor
        lives), ``ActorStopped`` at once if the actor stops first, ``MailboxFull`` if it is full.
        """
        return await self.ask_future(message, timeout=timeout)

    def ask_future(
        self, message: object, *, timeout: float | None = DEFAULT_ASK_TIMEOUT
    ) -> asyncio.Future[Any]:
        """:meth:`ask` without the coroutine: the future of the answer (already done when the
        actor answered on this call, see ``Actor.direct_delivery``). For callers that must not
        lose the answer when they are cancelled: they wait on it without cancelling it."""
        cell = self._cell
        reply: asyncio.Future[Any] = cell.loop.create_future()
        cell.tell_ask(message, reply)
        if timeout is not None and not reply.done():
            cell.system.ask_deadlines.add(timeout, reply, self.path, message)
        return reply

    def stop(self) -> None:
        """Ask the actor to stop after the message it is handling (pending asks fail now)."""
        self._cell.request_stop()

    @property
    def is_alive(self) -> bool:
        return not self._cell.stopping

    async def wait_stopped(self) -> None:
        """Return once the actor, its children included, has fully stopped."""
        await asyncio.shield(self._cell.terminated)

    def statistics(self) -> ActorStatistics:
        return self._cell.statistics()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ActorRef) and other.uid == self.uid and other.path == self.path

    def __hash__(self) -> int:
        return hash((self.path, self.uid))

    def __lt__(self, other: ActorRef) -> bool:
        return (self.path, self.uid) < (other.path, other.uid)

    def __repr__(self) -> str:
        return f"ActorRef({self.path}#{self.uid})"
