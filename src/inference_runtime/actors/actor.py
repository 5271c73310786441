"""The ``Actor`` base class and the context the kernel gives each instance."""

from __future__ import annotations

from collections.abc import Awaitable, Hashable
from typing import TYPE_CHECKING, Any, ClassVar

from inference_runtime.actors.supervision import DEFAULT_STRATEGY, SupervisorStrategy

if TYPE_CHECKING:
    from inference_runtime.actors.cell import ActorCell
    from inference_runtime.actors.props import Props
    from inference_runtime.actors.ref import ActorRef
    from inference_runtime.actors.system import ActorSystem
    from inference_runtime.actors.timers import TimerHandle


class Actor:
    """Subclass and implement :meth:`receive` (plain ``def`` or ``async def``).

    One message is handled at a time, in arrival order. What ``receive`` returns answers an ``ask``;
    what it raises fails the ask and goes to the parent's supervisor strategy, except exceptions
    listed in :attr:`replied_errors`, which only answer the ask. Hooks may be plain or ``async``.
    """

    replied_errors: ClassVar[tuple[type[BaseException], ...]] = ()
    """Exceptions that are an answer, not a failure: they fail the ask and leave the actor as is
    (raised from a ``tell``, they are logged and dropped)."""

    direct_delivery: ClassVar[bool] = False
    """For an actor whose ``receive`` is a plain, short ``def``: a message that finds it idle
    (nothing queued, not starting, restarting or stopping) is handled at once, on the sender's
    call, instead of waking the actor's task; an ``ask`` is then answered before it returns.
    Order is kept (only an empty mailbox is skipped) and one message is still handled at a
    time (a message sent while it handles one is queued). What ``receive`` raises is handled
    as for a queued message: it answers the ask, and a failure goes to the supervisor (in the
    actor's own task, before its next message). For hot control-plane actors (the coordinator,
    metrics, remote engines), where a wake-up per message is most of the cost."""

    context: ActorContext
    """Set by the kernel before ``pre_start``; valid for the instance's whole life."""

    def receive(self, message: Any) -> Any:
        raise TypeError(f"{type(self).__name__} does not implement receive()")

    def pre_start(self) -> Awaitable[None] | None:
        """Runs before the first message (and, through ``post_restart``, after a restart)."""
        return None

    def post_stop(self) -> Awaitable[None] | None:
        """Runs once the actor and all its children have stopped."""
        return None

    def pre_restart(self, error: BaseException, message: object) -> Awaitable[None] | None:
        """Runs on the failed instance before it is replaced; ``message`` is the one that failed
        (``None`` when the failure was not in ``receive``). Calls ``post_stop`` by default."""
        return self.post_stop()

    def post_restart(self, error: BaseException) -> Awaitable[None] | None:
        """Runs on the fresh instance after a restart. Calls ``pre_start`` by default."""
        return self.pre_start()

    def supervisor_strategy(self) -> SupervisorStrategy:
        """The strategy this actor applies to its children's failures."""
        return DEFAULT_STRATEGY


class ActorContext:
    """An actor's view of itself and its place in the tree."""

    __slots__ = ("_cell",)

    def __init__(self, cell: ActorCell) -> None:
        self._cell = cell

    @property
    def self_ref(self) -> ActorRef:
        return self._cell.ref

    @property
    def parent(self) -> ActorRef | None:
        """The parent's ref; ``None`` only for the user guardian."""
        return self._cell.parent_ref

    @property
    def children(self) -> list[ActorRef]:
        return [child.ref for child in self._cell.children.values()]

    @property
    def system(self) -> ActorSystem:
        return self._cell.system

    @property
    def sender(self) -> ActorRef | None:
        """The sender given to ``tell`` for the message being handled, if any."""
        return self._cell.current_sender

    def child(self, name: str) -> ActorRef | None:
        cell = self._cell.children.get(name)
        return cell.ref if cell is not None else None

    def spawn(self, props: Props, name: str | None = None) -> ActorRef:
        """Create a child actor; ``name`` must be unique among this actor's live children."""
        return self._cell.spawn_child(props, name)

    def stop(self, ref: ActorRef) -> None:
        """Stop this actor itself or one of its children (after the message being handled)."""
        self._cell.stop_ref(ref)

    def watch(self, ref: ActorRef) -> None:
        """Receive ``Terminated(ref)`` when ``ref`` stops (at once if it already has)."""
        self._cell.watch(ref)

    def unwatch(self, ref: ActorRef) -> None:
        """Stop watching; no ``Terminated`` for ``ref`` arrives after this call."""
        self._cell.unwatch(ref)

    def schedule_once(
        self, delay: float, message: object, *, key: Hashable | None = None
    ) -> TimerHandle:
        """Send ``message`` to self after ``delay`` seconds; a timer with the same key is replaced.
        Timers are cancelled when the actor stops or restarts."""
        return self._cell.timers.schedule(key, delay, message, interval=None)

    def schedule_repeatedly(
        self,
        interval: float,
        message: object,
        *,
        initial_delay: float | None = None,
        key: Hashable | None = None,
    ) -> TimerHandle:
        """Send ``message`` to self every ``interval`` seconds (first after ``initial_delay``,
        default ``interval``)."""
        first = interval if initial_delay is None else initial_delay
        return self._cell.timers.schedule(key, first, message, interval=interval)

    def cancel_timer(self, key: Hashable) -> None:
        self._cell.timers.cancel(key)
