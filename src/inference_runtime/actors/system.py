"""``ActorSystem``: the root of an actor tree, its dead letters and its statistics."""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from inference_runtime.actors.actor import Actor
from inference_runtime.actors.cell import ActorCell
from inference_runtime.actors.clock import Clock, LoopClock
from inference_runtime.actors.deadlines import AskDeadlines
from inference_runtime.actors.messages import ChildFailed, DeadLetter
from inference_runtime.actors.props import Props
from inference_runtime.actors.ref import ActorRef
from inference_runtime.actors.supervision import DEFAULT_STRATEGY, Directive, SupervisorStrategy

log = logging.getLogger("inference_runtime.actors")


@dataclass(frozen=True, slots=True)
class SystemStatistics:
    """A snapshot of the whole system."""

    name: str
    actors_alive: int
    actors_spawned: int
    actors_stopped: int
    messages_processed: int
    mailbox_depth: int
    restarts: int
    dead_letters: int
    terminated: bool


class DeadLetters:
    """Messages that reached no actor: counted, the latest kept, subscribers told."""

    def __init__(self, keep: int = 256) -> None:
        self.count = 0
        self.recent: deque[DeadLetter] = deque(maxlen=keep)
        self._subscribers: list[Callable[[DeadLetter], None]] = []

    def subscribe(self, callback: Callable[[DeadLetter], None]) -> Callable[[], None]:
        """Call ``callback`` for every dead letter; returns the function that unsubscribes."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback)

    def publish(self, letter: DeadLetter) -> None:
        self.count += 1
        self.recent.append(letter)
        log.debug("dead letter to %s: %r", letter.recipient.path, letter.message)
        for callback in list(self._subscribers):
            try:
                callback(letter)
            except Exception:
                log.exception("dead-letter subscriber failed")


class _Guardian(Actor):
    """The parent of every actor made with ``actor_of``; applies the system's guardian strategy."""

    def __init__(self, strategy: SupervisorStrategy) -> None:
        self._strategy = strategy

    def receive(self, message: Any) -> None:
        if isinstance(message, ChildFailed):
            log.error("top-level actor %s stopped after %r", message.ref.path, message.error)
            return
        self.context.system.dead_letter(message, self.context.self_ref, self.context.sender)

    def supervisor_strategy(self) -> SupervisorStrategy:
        return self._strategy


class _Root:
    """The guardian's parent: a failure that reaches it terminates the system."""

    ref: ActorRef | None = None

    def __init__(self, system: ActorSystem) -> None:
        self._system = system

    def decide_for_child(self, child: ActorCell, error: BaseException) -> tuple[Directive, float]:
        log.critical("failure escalated to the root of %s: %r", self._system.name, error)
        self._system.termination_cause = error
        return Directive.STOP, 0.0

    def escalate(self, error: BaseException, child: ActorCell) -> None:
        self.decide_for_child(child, error)
        child.request_stop()

    def child_terminated(self, child: ActorCell) -> None:
        self._system.on_guardian_terminated()


class ActorSystem:
    """An actor tree on the running event loop. Create it with :meth:`create`."""

    def __init__(
        self,
        name: str,
        *,
        loop: asyncio.AbstractEventLoop,
        clock: Clock | None = None,
        guardian_strategy: SupervisorStrategy = DEFAULT_STRATEGY,
    ) -> None:
        self.name = name
        self.loop = loop
        self.clock: Clock = clock if clock is not None else LoopClock(loop)
        self.default_strategy = DEFAULT_STRATEGY
        self.dead_letters = DeadLetters()
        self.ask_deadlines = AskDeadlines(loop)
        self.termination_cause: BaseException | None = None
        self.restarts = 0
        self._uids = itertools.count(1)
        self._names = itertools.count()
        self._cells: set[ActorCell] = set()
        self._spawned = 0
        self._stopped = 0
        self._retired_processed = 0
        self._terminated: asyncio.Future[None] = loop.create_future()
        self._root = _Root(self)
        self._guardian = ActorCell(
            self, self._root, Props(lambda: _Guardian(guardian_strategy)), "user", "/user"
        )

    @classmethod
    def create(
        cls,
        name: str = "inference",
        *,
        clock: Clock | None = None,
        guardian_strategy: SupervisorStrategy = DEFAULT_STRATEGY,
    ) -> ActorSystem:
        """Start a system on the running event loop.

        ``clock`` drives restart windows, backoff and timers (tests pass a ManualClock);
        ``guardian_strategy`` supervises the actors made with :meth:`actor_of`.
        """
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            raise RuntimeError(
                "ActorSystem.create() needs a running event loop: call it from async code"
            ) from None
        return cls(name, loop=loop, clock=clock, guardian_strategy=guardian_strategy)

    # -- the tree --------------------------------------------------------------------------

    def actor_of(self, props: Props, name: str | None = None) -> ActorRef:
        """Create a top-level actor at ``/user/<name>``; names are unique among live siblings."""
        return self._guardian.spawn_child(props, name)

    def child(self, name: str) -> ActorRef | None:
        """The live top-level actor ``/user/<name>``, if there is one."""
        cell = self._guardian.children.get(name)
        return None if cell is None or cell.stopping else cell.ref

    @property
    def guardian(self) -> ActorRef:
        return self._guardian.ref

    def stop(self, ref: ActorRef) -> None:
        """Stop any actor (after the message it is handling)."""
        ref.stop()

    async def shutdown(self) -> None:
        """Stop every actor, children before parents, and return when all have stopped."""
        self._guardian.request_stop()
        await asyncio.shield(self._terminated)

    async def when_terminated(self) -> None:
        """Return once the system has stopped (after ``shutdown`` or a failure at the root)."""
        await asyncio.shield(self._terminated)

    @property
    def is_terminated(self) -> bool:
        return self._terminated.done()

    # -- kernel callbacks ------------------------------------------------------------------

    def next_uid(self) -> int:
        return next(self._uids)

    def generated_name(self) -> str:
        return f"${next(self._names):x}"  # one per request actor: kept cheap

    def dead_letter(self, message: object, recipient: ActorRef, sender: ActorRef | None) -> None:
        self.dead_letters.publish(DeadLetter(message, recipient, sender))

    def cell_started(self, cell: ActorCell) -> None:
        if cell.parent is self._root:
            return  # the guardian is not counted among the actors
        self._cells.add(cell)
        self._spawned += 1

    def cell_terminated(self, cell: ActorCell) -> None:
        if cell not in self._cells:
            return
        self._cells.discard(cell)
        self._stopped += 1
        self._retired_processed += cell.processed

    def on_guardian_terminated(self) -> None:
        if not self._terminated.done():
            self._terminated.set_result(None)

    def statistics(self) -> SystemStatistics:
        cells = self._cells
        return SystemStatistics(
            name=self.name,
            actors_alive=len(cells),
            actors_spawned=self._spawned,
            actors_stopped=self._stopped,
            messages_processed=self._retired_processed + sum(c.processed for c in cells),
            mailbox_depth=sum(len(c.queue) for c in cells),
            restarts=self.restarts,
            dead_letters=self.dead_letters.count,
            terminated=self.is_terminated,
        )

    def __repr__(self) -> str:
        return f"ActorSystem({self.name!r}, alive={len(self._cells)})"
