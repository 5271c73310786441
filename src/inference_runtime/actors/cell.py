"""``ActorCell``: the machinery behind one actor (mailbox, run loop, lifecycle, supervision).

Each cell runs one asyncio task. Everything that changes an actor's state (a message, a restart,
a stop) happens in that task, between messages; other parties only queue work and wake it.
Supervision decisions are taken synchronously by the parent's strategy (they are pure), and carried
out by the child's own task.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from inference_runtime.actors.actor import Actor, ActorContext
from inference_runtime.actors.deferred import Deferred
from inference_runtime.actors.messages import ChildFailed, PoisonPill, Terminated
from inference_runtime.actors.ref import ActorRef, ActorStatistics
from inference_runtime.actors.supervision import Directive, RestartWindow, SupervisorStrategy
from inference_runtime.actors.timers import Timers
from inference_runtime.errors import (
    ActorInitializationError,
    ActorNameTaken,
    ActorStopped,
    InvalidActorName,
    MailboxFull,
)

if TYPE_CHECKING:
    from inference_runtime.actors.props import Props
    from inference_runtime.actors.system import ActorSystem

log = logging.getLogger("inference_runtime.actors")

Envelope = tuple[object, "ActorRef | None", "asyncio.Future[Any] | None"]
_KERNEL_MESSAGES = (PoisonPill, Terminated)
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.:@+=~")


class Supervisor(Protocol):
    """What a cell needs from its parent: a cell, or the system's root."""

    @property
    def ref(self) -> ActorRef | None: ...

    def decide_for_child(
        self, child: ActorCell, error: BaseException
    ) -> tuple[Directive, float]: ...

    def escalate(self, error: BaseException, child: ActorCell) -> None: ...

    def child_terminated(self, child: ActorCell) -> None: ...


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidActorName(f"actor name must be a non-empty string, got {name!r}")
    if name.startswith("$"):
        raise InvalidActorName(f"actor name {name!r}: names starting with '$' are reserved")
    bad = set(name) - _NAME_CHARS
    if bad:
        raise InvalidActorName(
            f"actor name {name!r} has characters outside [A-Za-z0-9-_.:@+=~]: {sorted(bad)}"
        )
    return name


async def _maybe_await(result: Awaitable[None] | None) -> None:
    if result is not None and inspect.isawaitable(result):
        await result


class ActorCell:
    """The runtime state of one actor incarnation."""

    def __init__(
        self, system: ActorSystem, parent: Supervisor, props: Props, name: str, path: str
    ) -> None:
        self.system = system
        self.parent = parent
        self.props = props
        self.name = name
        self.path = path
        self.loop = system.loop
        self.uid = system.next_uid()
        self.ref = ActorRef(self, path, self.uid)
        self.parent_ref = parent.ref
        self.children: dict[str, ActorCell] = {}
        self.timers: Timers
        self.restart_window: RestartWindow
        self.queue: deque[Envelope] = deque()
        self.capacity = props.mailbox_capacity
        self.sysq: deque[tuple[str, BaseException, object]] = deque()
        self.watchers: set[ActorCell] = set()
        self.watching: set[ActorCell] = set()
        self.instance: Actor | None = None
        self.strategy: SupervisorStrategy | None = None
        self.receive_fn: Callable[[Any], Any] | None = None
        self.async_receive = False
        self.direct = False
        """Idle messages run on the sender's call (``Actor.direct_delivery``, sync receive)."""
        self.direct_busy = False
        self.replied_errors: tuple[type[BaseException], ...] = ()
        self.current_sender: ActorRef | None = None
        self.started = False
        self.stopping = False
        self.escalated = False
        self.limit_exceeded = False
        self.failure: BaseException | None = None
        self.interruptible = False
        self.cancel_requested = False
        self.deferred: set[asyncio.Task[None]] = set()
        self.waiter: asyncio.Future[None] | None = None
        self.suspension: asyncio.Future[None] | None = None
        self.processed = 0
        self.failures = 0
        self.restarts = 0
        self.terminated: asyncio.Future[None] = self.loop.create_future()
        system.cell_started(self)
        self.task = self.loop.create_task(self._run(), name=f"actor:{path}")

    # -- sending ---------------------------------------------------------------------------

    def tell(self, message: object, sender: ActorRef | None) -> None:
        if self.stopping:
            self.system.dead_letter(message, self.ref, sender)
            return
        queue = self.queue
        if self.direct and not queue and not isinstance(message, _KERNEL_MESSAGES):
            # idle: parked on an empty mailbox, no system work, not handling a message
            waiter = self.waiter
            if waiter is not None and not waiter.done() and not self.sysq and not self.direct_busy:
                self._run_direct(message, sender, None)
                return
        if self.capacity is not None and len(queue) >= self.capacity:
            raise MailboxFull(self.path, self.capacity)
        queue.append((message, sender, None))
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def tell_ask(self, message: object, reply: asyncio.Future[Any]) -> None:
        if self.stopping:
            raise ActorStopped(self.path)
        queue = self.queue
        if self.direct and not queue and not isinstance(message, _KERNEL_MESSAGES):
            waiter = self.waiter
            if waiter is not None and not waiter.done() and not self.sysq and not self.direct_busy:
                self._run_direct(message, None, reply)
                return
        if self.capacity is not None and len(queue) >= self.capacity:
            raise MailboxFull(self.path, self.capacity)
        queue.append((message, None, reply))
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def deliver_kernel(self, message: object) -> None:
        """Kernel notifications (Terminated, ChildFailed) are never refused for capacity."""
        if self.stopping:
            return
        self.queue.append((message, None, None))
        self._wake()

    def _deliver_timer(self, message: object) -> None:
        try:
            self.tell(message, None)
        except MailboxFull:
            self.system.dead_letter(message, self.ref, None)

    def _post_system(self, kind: str, error: BaseException, message: object = None) -> None:
        self.sysq.append((kind, error, message))
        self._wake()

    # -- direct delivery (see Actor.direct_delivery) ---------------------------------------

    def _run_direct(
        self, message: object, sender: ActorRef | None, reply: asyncio.Future[Any] | None
    ) -> None:
        """Handle one message on the caller's stack, as ``_process`` would in the task."""
        self.direct_busy = True
        self.current_sender = sender
        try:
            result = self.receive_fn(message)  # type: ignore[misc]
        except Exception as error:
            if self._is_failure(error, reply):
                # supervision runs in the actor's own task; until then the actor is not idle
                self._post_system("failed_direct", error, message)
            return
        finally:
            self.current_sender = None
            self.direct_busy = False
        if reply is not None and result.__class__ is not Deferred:  # _answer, inline
            if not reply.done():
                reply.set_result(result)
            self.processed += 1
        else:
            self._answer(result, reply)

    def _is_failure(self, error: Exception, reply: asyncio.Future[Any] | None) -> bool:
        """Fail the ask with ``error``; True when it is a failure for supervision (counted),
        False when it is one of the actor's replied errors (only an answer)."""
        if reply is not None and not reply.done():
            reply.set_exception(error)
        if isinstance(error, self.replied_errors):
            if reply is None:
                log.warning("%s: %r raised from a tell; dropped", self.path, error)
            return False
        self.failures += 1
        return True

    def _answer(self, result: object, reply: asyncio.Future[Any] | None) -> None:
        if isinstance(result, Deferred):
            self._defer(result, reply)
        elif reply is not None and not reply.done():
            reply.set_result(result)
        self.processed += 1

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- the run loop ----------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            if not self.stopping:
                error = await self._create_instance(restart_error=None)
                if error is not None:
                    await self._handle_failure(error, None)
            if not self.stopping:
                await self._process()
        except asyncio.CancelledError:
            if not self.cancel_requested:
                self.stopping = True
                await self._teardown()
                raise
        await self._teardown()

    async def _process(self) -> None:
        queue, sysq, loop = self.queue, self.sysq, self.loop
        throughput = self.props.throughput
        budget = throughput
        while not self.stopping:
            if sysq:
                kind, error, failed = sysq.popleft()
                await self._process_system(kind, error, failed)
                continue
            if not queue:
                budget = throughput
                self.waiter = waiter = loop.create_future()
                await waiter
                self.waiter = None
                continue
            if budget == 0:
                budget = throughput
                await asyncio.sleep(0)
                continue
            budget -= 1
            message, sender, reply = queue.popleft()
            if isinstance(message, _KERNEL_MESSAGES) and not self._accept_kernel(message):
                continue
            self.current_sender = sender
            try:
                if self.async_receive:
                    self.interruptible = True
                    try:
                        result = await self.receive_fn(message)  # type: ignore[misc]
                    finally:
                        self.interruptible = False
                else:
                    result = self.receive_fn(message)  # type: ignore[misc]
            except asyncio.CancelledError:
                if reply is not None and not reply.done():
                    reply.set_exception(ActorStopped(self.path))
                raise
            except Exception as error:
                if self._is_failure(error, reply):
                    await self._handle_failure(error, message)
                continue
            finally:
                self.current_sender = None
            self._answer(result, reply)

    def _defer(self, deferred: Deferred, reply: asyncio.Future[Any] | None) -> None:
        task = self.loop.create_task(self._settle(deferred, reply), name=f"{self.path}:deferred")
        self.deferred.add(task)
        task.add_done_callback(self.deferred.discard)

    async def _settle(self, deferred: Deferred, reply: asyncio.Future[Any] | None) -> None:
        try:
            result = await deferred.awaitable
        except asyncio.CancelledError:
            if reply is not None and not reply.done():
                reply.set_exception(ActorStopped(self.path))
            raise
        except Exception as error:
            if reply is None:
                log.warning("%s: %r raised from a deferred tell; dropped", self.path, error)
            elif not reply.done():
                reply.set_exception(error)
            return
        if reply is not None and not reply.done():
            reply.set_result(result)

    def _accept_kernel(self, message: object) -> bool:
        """Handle PoisonPill here; let through only Terminated of actors still watched."""
        if isinstance(message, PoisonPill):
            self.request_stop()
            return False
        assert isinstance(message, Terminated)
        cell = message.ref._cell
        if cell not in self.watching:
            return False
        self.watching.discard(cell)
        return True

    async def _process_system(self, kind: str, error: BaseException, message: object) -> None:
        if kind == "failed_direct":  # receive raised on a sender's call
            await self._handle_failure(error, message)
            return
        if kind == "restart":  # a sibling failed under an all-for-one strategy
            failed = await self._restart(error, None)
            if failed is not None:
                await self._handle_failure(failed, None)
            return
        # kind == "failed": a child escalated; this actor fails with the child's error
        self.failures += 1
        await self._handle_failure(error, None)
        if not self.stopping:
            for child in list(self.children.values()):
                if child.escalated:
                    child.resume()

    # -- lifecycle -------------------------------------------------------------------------

    async def _create_instance(
        self, *, restart_error: BaseException | None
    ) -> BaseException | None:
        """Build a fresh instance and run its start hook; return the failure, if any."""
        self.interruptible = True
        try:
            instance = self.props.factory()
            if not isinstance(instance, Actor):
                raise TypeError(f"Props.factory returned {type(instance).__name__}, not an Actor")
            instance.context = ActorContext(self)
            self.instance = instance
            self.strategy = instance.supervisor_strategy()
            self.receive_fn = instance.receive
            self.async_receive = inspect.iscoroutinefunction(instance.receive)
            self.direct = type(instance).direct_delivery and not self.async_receive
            self.replied_errors = type(instance).replied_errors
            if restart_error is None:
                await _maybe_await(instance.pre_start())
            else:
                await _maybe_await(instance.post_restart(restart_error))
        except asyncio.CancelledError:
            if not self.cancel_requested:
                raise
            return None
        except Exception as error:
            return ActorInitializationError(self.path, error)
        finally:
            self.interruptible = False
        self.started = True
        return None

    async def _handle_failure(self, error: BaseException, message: object) -> None:
        """Apply the parent's directives until the actor runs again, or stops."""
        current: BaseException | None = error
        while current is not None and not self.stopping:
            directive, delay = self.parent.decide_for_child(self, current)
            if directive is Directive.RESUME:
                return
            if directive is Directive.STOP:
                self.failure = current
                self.request_stop()
                return
            if directive is Directive.ESCALATE:
                self.escalated = True
                self.parent.escalate(current, self)
                await self._suspend(None)
                self.escalated = False
                return
            if delay > 0 and not await self._backoff(delay):
                return
            current = await self._restart(current, message)
            message = None

    async def _backoff(self, delay: float) -> bool:
        """Wait before a restart; False when the actor was stopped meanwhile."""
        await self._suspend(delay)
        return not self.stopping

    async def _suspend(self, delay: float | None) -> None:
        """Wait for a restart backoff, or (``delay=None``) for the parent to resume this actor."""
        self.suspension = fut = self.loop.create_future()
        handle = None
        if delay is not None:
            handle = self.system.clock.call_later(delay, _resolve, fut)
        try:
            await fut
        finally:
            self.suspension = None
            if handle is not None:
                handle.cancel()

    def resume(self) -> None:
        fut = self.suspension
        if fut is not None and not fut.done():
            fut.set_result(None)

    async def _restart(self, error: BaseException, message: object) -> BaseException | None:
        self.restarts += 1
        self.system.restarts += 1
        self._cancel_timers()
        old = self.instance
        if old is not None and self.started:
            try:
                await _maybe_await(old.pre_restart(error, message))
            except Exception:
                log.exception("%s: pre_restart failed; restarting anyway", self.path)
        await self._stop_children()
        self.instance = None
        self.started = False
        if self.stopping:
            return None
        log.info("%s restarted after %r", self.path, error)
        return await self._create_instance(restart_error=error)

    def request_stop(self) -> None:
        """Stop after the current message; fail pending asks and dead-letter queued tells now."""
        if self.stopping:
            return
        self.stopping = True
        self._drain_mailbox()
        self._wake()
        self.resume()
        if self.interruptible and asyncio.current_task() is not self.task:
            self.cancel_requested = True
            self.task.cancel()

    def _drain_mailbox(self) -> None:
        queue = self.queue
        while queue:
            message, sender, reply = queue.popleft()
            if reply is not None:
                if not reply.done():
                    reply.set_exception(ActorStopped(self.path))
            elif not isinstance(message, Terminated | ChildFailed):
                self.system.dead_letter(message, self.ref, sender)

    async def _stop_children(self) -> None:
        children = list(self.children.values())
        for child in children:
            child.request_stop()
        for child in children:
            try:
                await asyncio.shield(child.terminated)
            except asyncio.CancelledError:
                if not self.cancel_requested:
                    raise

    async def _teardown(self) -> None:
        self.stopping = True
        self._drain_mailbox()
        for task in list(self.deferred):
            task.cancel()
        await self._stop_children()
        self._cancel_timers()
        if self.instance is not None and self.started:
            try:
                await _maybe_await(self.instance.post_stop())
            except Exception:
                log.exception("%s: post_stop failed", self.path)
        if self.cancel_requested:
            self.task.uncancel()
            self.cancel_requested = False
        self.instance = None
        self.receive_fn = None
        for watched in self.watching:
            watched.watchers.discard(self)
        self.watching.clear()
        for watcher in self.watchers:
            watcher.deliver_kernel(Terminated(self.ref))
        self.watchers.clear()
        self.parent.child_terminated(self)
        self.system.cell_terminated(self)
        if not self.terminated.done():
            self.terminated.set_result(None)
        self._break_cycles()

    def _cancel_timers(self) -> None:
        timers: Timers | None = self.__dict__.get("timers")  # none made: nothing to cancel
        if timers is not None:
            timers.cancel_all()

    def _break_cycles(self) -> None:
        """Drop the stopped cell's links back to itself (its own ref, its timers' callback), so
        that reference counting frees it and all it holds once the last outside ref goes: a
        server spawns an actor per request, and the cyclic collector walking each stopped one
        cost more CPU than the actor itself. Both come back on demand (``__getattr__``)."""
        del self.ref
        self.__dict__.pop("timers", None)

    def __getattr__(self, name: str) -> Any:
        # only reached for what is made on first use (most request actors never need timers
        # or a restart window) and for what _break_cycles dropped after the actor stopped
        if name == "timers":
            self.timers = Timers(self.system.clock, self._deliver_timer)
            return self.timers
        if name == "restart_window":
            self.restart_window = RestartWindow()
            return self.restart_window
        if name == "ref":
            return ActorRef(self, self.path, self.uid)  # equal to the one it replaced
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # -- children, watching ----------------------------------------------------------------

    def spawn_child(self, props: Props, name: str | None) -> ActorRef:
        if self.stopping:
            raise ActorStopped(self.path)
        name = self.system.generated_name() if name is None else validate_name(name)
        if name in self.children:
            raise ActorNameTaken(f"{self.path} already has a live child named {name!r}")
        prefix = self.path if self.path != "/" else ""
        child = ActorCell(self.system, self, props, name, f"{prefix}/{name}")
        self.children[name] = child
        return child.ref

    def stop_ref(self, ref: ActorRef) -> None:
        cell = ref._cell
        if cell is not self and cell.parent is not self:
            raise ValueError(f"{self.path} may stop only itself or its children, not {ref.path}")
        cell.request_stop()

    def watch(self, ref: ActorRef) -> None:
        cell = ref._cell
        if cell is self or cell in self.watching:
            return
        self.watching.add(cell)
        if cell.terminated.done():
            self.deliver_kernel(Terminated(ref))
        else:
            cell.watchers.add(self)

    def unwatch(self, ref: ActorRef) -> None:
        cell = ref._cell
        self.watching.discard(cell)
        cell.watchers.discard(self)

    # -- Supervisor, for the children ------------------------------------------------------

    def decide_for_child(self, child: ActorCell, error: BaseException) -> tuple[Directive, float]:
        strategy = self.strategy or self.system.default_strategy
        try:
            directive = strategy.decide(error)
        except Exception:
            log.exception("%s: supervisor decider failed; escalating", self.path)
            directive = Directive.ESCALATE
        delay = 0.0
        if directive is Directive.RESTART:
            number = child.restart_window.try_restart(
                now=self.system.clock.now(),
                max_restarts=strategy.max_restarts,
                within=strategy.within,
            )
            if number is None:
                child.limit_exceeded = True
                directive = Directive.STOP
                log.warning(
                    "%s: more than %d restarts within %gs; stopping it",
                    child.path,
                    strategy.max_restarts,
                    strategy.within,
                )
            elif strategy.backoff is not None:
                delay = strategy.backoff.delay(number)
        if strategy.all_for_one and directive in (Directive.RESTART, Directive.STOP):
            for sibling in list(self.children.values()):
                if sibling is child:
                    continue
                if directive is Directive.STOP:
                    sibling.request_stop()
                else:
                    sibling._post_system("restart", error)
        return directive, delay

    def escalate(self, error: BaseException, child: ActorCell) -> None:
        self._post_system("failed", error)

    def child_terminated(self, child: ActorCell) -> None:
        if self.children.get(child.name) is child:
            del self.children[child.name]
        if child.failure is not None:
            self.deliver_kernel(ChildFailed(child.ref, child.failure, child.limit_exceeded))

    def statistics(self) -> ActorStatistics:
        return ActorStatistics(
            path=self.path,
            alive=not self.stopping,
            mailbox_depth=len(self.queue),
            processed=self.processed,
            failures=self.failures,
            restarts=self.restarts,
            children=len(self.children),
            timers=len(self.__dict__.get("timers") or ()),
        )


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
