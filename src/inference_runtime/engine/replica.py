"""``ReplicaActor``: what every local replica shares, whatever its work loop does.

A runner under the two-tier supervision (a ``WorkerActor`` over a restartable ``ContextActor``),
a work loop beside the actor (never through its mailbox), a health state, and load reports to
the coordinator whenever they change. ``EngineCoreActor`` (generation) and
``EmbeddingEngineActor`` (embeddings) differ only in their queues and their loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from inference_runtime.actors import (
    Actor,
    ActorRef,
    ChildFailed,
    Directive,
    OneForOneStrategy,
    Props,
    SupervisorStrategy,
)
from inference_runtime.engine.worker import (
    ContextActor,
    ContextReady,
    Poisoned,
    WorkerActor,
    context_strategy,
)
from inference_runtime.errors import (
    ActorInitializationError,
    InferenceRuntimeError,
    MailboxFull,
    ReplicaFailed,
)
from inference_runtime.types import Deployment, EngineLoad, ReplicaState

log = logging.getLogger("inference_runtime.engine")


@dataclass(frozen=True, slots=True)
class GetEngineStats:
    pass


@dataclass(frozen=True, slots=True)
class EngineStatistics:
    deployment: str
    replica_id: str
    state: ReplicaState
    waiting: int
    running: int
    steps: int
    """Engine steps (generation) or forwards (embeddings) run."""
    context_restarts: int
    reason: str | None


@dataclass(frozen=True, slots=True)
class ReplicaDown:
    """Told to the replica's parent (the deployment manager) when supervision takes the replica
    out: its context failed beyond the restart window. The parent re-places it."""

    replica_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class StepHung:
    """From the health check, before it takes the replica out (ask; every replica answers it):
    the step in flight never returned. Its requests fail as a failed step's do (so that the one
    that hangs replicas is found); the rest fail as any request of a lost replica."""

    reason: str


@dataclass(frozen=True, slots=True)
class _LoopCrashed:
    error: BaseException


class ReplicaActor(Actor):
    """Subclasses implement ``_work_loop``, ``_fail_all`` and ``_counts``, and pass unknown
    messages to ``replica_message``."""

    replied_errors = (InferenceRuntimeError,)

    def __init__(
        self,
        deployment: Deployment,
        replica_id: str,
        *,
        coordinator: ActorRef | None = None,
        runner_factory: Callable[[], Any],
        context_restart_window: tuple[int, float] = (3, 60.0),
    ) -> None:
        self.deployment = deployment
        self.replica_id = replica_id
        self.coordinator = coordinator
        self.runner_factory = runner_factory
        self.restart_window = context_restart_window
        self.runner: Any = None
        """The loaded runner, or None while it loads or rebuilds."""
        self.context_ref: ActorRef | None = None
        self.state = ReplicaState.STARTING
        self.reason: str | None = None
        self.context_restarts = 0
        self.steps = 0
        self._wake: asyncio.Future[None] | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._last_load: EngineLoad | None = None

    # -- hooks -------------------------------------------------------------------------

    async def _work_loop(self) -> None:
        raise TypeError(f"{type(self).__name__} does not implement _work_loop()")

    def _fail_all(self, error: ReplicaFailed) -> None:
        """Fail everything queued or running (the replica stopped or failed)."""
        raise TypeError(f"{type(self).__name__} does not implement _fail_all()")

    def _counts(self) -> tuple[int, int]:
        """(waiting, running), as the load report counts them."""
        raise TypeError(f"{type(self).__name__} does not implement _counts()")

    def _step_hung(self, reason: str) -> None:
        """The health check found the work loop stuck (``StepHung``); by default the stop that
        follows fails what is left."""

    # -- lifecycle ---------------------------------------------------------------------

    def pre_start(self) -> None:
        self.runner_obj = self.runner_factory()
        me = self.context.self_ref
        runner = self.runner_obj
        ctx = Props(lambda: ContextActor(runner, me), mailbox_capacity=16)
        max_restarts, within = self.restart_window
        strategy = context_strategy(max_restarts=max_restarts, within=within)
        self.context.spawn(Props(lambda: WorkerActor(ctx, strategy)), "worker")
        self._loop_task = asyncio.get_running_loop().create_task(
            self._guarded_loop(), name=f"{type(self).__name__}:{me.path}"
        )
        self._report_load()

    async def post_stop(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
        self._fail_all(ReplicaFailed(f"replica {self.replica_id} stopped"))
        if self.state is not ReplicaState.FAILED:
            self.state, self.reason = ReplicaState.FAILED, self.reason or "stopped"
            self._report_load()

    def supervisor_strategy(self) -> SupervisorStrategy:
        return OneForOneStrategy(decider=lambda error: Directive.STOP)

    def replica_message(self, message: Any) -> Any:
        """The messages every replica understands."""
        match message:
            case ContextReady():
                self._context_ready(message)
            case ChildFailed(error=error):
                self._mark_failed(_failure_reason(error))
            case GetEngineStats():
                return self.statistics()
            case StepHung(reason=reason):
                self._step_hung(reason)
            case _LoopCrashed(error=error):
                raise error
        return None

    def _context_ready(self, message: ContextReady) -> None:
        self.runner, self.context_ref = message.runner, message.context
        self.context_restarts += int(message.restarted)
        if self.state is ReplicaState.STARTING or message.restarted:
            self.state, self.reason = ReplicaState.HEALTHY, None
        self._poke()
        self._report_load()

    def _context_failed(self, error: Exception) -> None:
        """The runner failed mid-work: restart its context (the caller fails the work)."""
        log.warning("%s: context failed: %r", self.replica_id, error)
        self.runner = None
        if self.context_ref is not None:
            self.context_ref.tell(Poisoned(error))

    def _mark_failed(self, reason: str) -> None:
        log.error("%s: replica failed: %s", self.replica_id, reason)
        self.state, self.reason, self.runner = ReplicaState.FAILED, reason, None
        self._fail_all(ReplicaFailed(f"replica {self.replica_id} failed: {reason}"))
        self._report_load()
        parent = self.context.parent
        if parent is not None:
            parent.tell(ReplicaDown(self.replica_id, reason), sender=self.context.self_ref)

    # -- the loop and the reports ------------------------------------------------------

    async def _guarded_loop(self) -> None:
        try:
            await self._work_loop()
        except asyncio.CancelledError:
            raise
        except Exception as error:  # a bug in the loop: fail the actor, supervision decides
            log.exception("%s: work loop crashed", self.replica_id)
            self.context.self_ref.tell(_LoopCrashed(error))

    async def _idle(self) -> None:
        """Wait until ``_poke`` (new work, a ready runner)."""
        self._wake = asyncio.get_running_loop().create_future()
        await self._wake

    def _poke(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def _current_load(self) -> EngineLoad:
        waiting, running = self._counts()
        return EngineLoad(
            deployment=self.deployment.name,
            replica_id=self.replica_id,
            state=self.state,
            waiting=waiting,
            running=running,
            context_restarts=self.context_restarts,
            reason=self.reason,
        )

    def _report_load(self) -> None:
        load = self._current_load()
        if load != self._last_load and self.coordinator is not None:
            try:
                self.coordinator.tell(load, sender=self.context.self_ref)
            except MailboxFull:
                return  # reports are idempotent: the next one carries the same facts
            self._last_load = load

    def statistics(self) -> EngineStatistics:
        load = self._current_load()
        return EngineStatistics(
            deployment=load.deployment,
            replica_id=load.replica_id,
            state=load.state,
            waiting=load.waiting,
            running=load.running,
            steps=self.steps,
            context_restarts=load.context_restarts,
            reason=load.reason,
        )


def _failure_reason(error: BaseException) -> str:
    """What an operator reads in ``status`` and a 503: a runner that could not even start says
    what stopped it (a bad key file, a missing model), not the actor that wrapped it."""
    if isinstance(error, ActorInitializationError) and error.__cause__ is not None:
        cause = error.__cause__
        if isinstance(cause, ActorInitializationError) and cause.__cause__ is not None:
            cause = cause.__cause__
        return f"cannot start: {cause}" if str(cause) else f"cannot start: {cause!r}"
    return f"context failed beyond its restart window: {error!r}"
