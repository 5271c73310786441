"""``EngineCoreActor``: one local replica. The actor takes control messages (add, abort, context
events); a step loop beside it schedules, runs the runner and emits tokens straight into each
request's sink."""

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
from inference_runtime.engine.admission import build_sequences
from inference_runtime.engine.runner import ModelRunner
from inference_runtime.engine.scheduler import Scheduler
from inference_runtime.engine.sequence import Sequence, SequenceStatus
from inference_runtime.engine.sink import SequenceSink
from inference_runtime.engine.worker import (
    ContextActor,
    ContextReady,
    Poisoned,
    WorkerActor,
    context_strategy,
)
from inference_runtime.errors import (
    InferenceRuntimeError,
    MailboxFull,
    OutOfMemory,
    ReplicaFailed,
)
from inference_runtime.types import Deployment, EngineLoad, EngineRequest, ReplicaState, Usage

log = logging.getLogger("inference_runtime.engine")
_DONE = (SequenceStatus.FINISHED, SequenceStatus.ABORTED)


@dataclass(frozen=True, slots=True)
class AddRequest:
    """Admit all choices of one request (ask). Answers ``Admitted``; raises Backpressure,
    ContextLengthExceeded, UnsupportedParameter or ReplicaFailed."""

    requests: tuple[EngineRequest, ...]
    sink: SequenceSink


@dataclass(frozen=True, slots=True)
class Admitted:
    replica_id: str
    prompt_tokens: int


@dataclass(frozen=True, slots=True)
class AbortRequest:
    """Stop generating for every choice of a request and free their slots (tell)."""

    request_id: str


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
    context_restarts: int
    reason: str | None


@dataclass(frozen=True, slots=True)
class _LoopCrashed:
    error: BaseException


class EngineCoreActor(Actor):
    replied_errors = (InferenceRuntimeError,)

    def __init__(
        self,
        deployment: Deployment,
        replica_id: str,
        *,
        coordinator: ActorRef | None = None,
        runner_factory: Callable[[], ModelRunner],
        context_restart_window: tuple[int, float] = (3, 60.0),
    ) -> None:
        self.deployment = deployment
        self.replica_id = replica_id
        self.coordinator = coordinator
        self.runner_factory = runner_factory
        self.restart_window = context_restart_window
        serving = deployment.serving
        self.scheduler = Scheduler(
            max_num_seqs=serving.max_concurrent,
            max_batched_tokens=serving.max_batched_tokens,
            queue_capacity=serving.queue_capacity,
            retry_after=serving.retry_after_s,
        )
        self.requests: dict[str, list[Sequence]] = {}
        self.runner: ModelRunner | None = None
        self.context_ref: ActorRef | None = None
        self.state = ReplicaState.STARTING
        self.reason: str | None = None
        self.context_restarts = 0
        self.steps = 0
        self.stepping = False
        self._wake: asyncio.Future[None] | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._last_load: EngineLoad | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def pre_start(self) -> None:
        self.runner_obj = self.runner_factory()
        me = self.context.self_ref
        max_restarts, within = self.restart_window
        ctx = Props(lambda: ContextActor(self.runner_obj, me), mailbox_capacity=16)
        strategy = context_strategy(max_restarts=max_restarts, within=within)
        self.context.spawn(Props(lambda: WorkerActor(ctx, strategy)), "worker")
        self._loop_task = asyncio.get_running_loop().create_task(
            self._step_loop(), name=f"engine-loop:{me.path}"
        )
        self._report_load()

    async def post_stop(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
        self._fail_all(ReplicaFailed(f"replica {self.replica_id} stopped"))
        if self.state is not ReplicaState.FAILED:
            self.state = ReplicaState.FAILED
            self.reason = self.reason or "stopped"
            self._report_load()

    def supervisor_strategy(self) -> SupervisorStrategy:
        return OneForOneStrategy(decider=lambda error: Directive.STOP)

    # -- control messages --------------------------------------------------------------

    def receive(self, message: Any) -> Any:
        match message:
            case AddRequest():
                return self._admit(message)
            case AbortRequest(request_id=request_id):
                self._abort(request_id)
            case ContextReady():
                self._context_ready(message)
            case ChildFailed(error=error):
                self._mark_failed(f"context failed beyond its restart window: {error!r}")
            case GetEngineStats():
                return self.statistics()
            case _LoopCrashed(error=error):
                raise error
        return None

    def _admit(self, message: AddRequest) -> Admitted:
        if self.state in (ReplicaState.FAILED, ReplicaState.DRAINING):
            raise ReplicaFailed(f"replica {self.replica_id} is {self.state.value}")
        loop = asyncio.get_running_loop()
        seqs = build_sequences(self.runner_obj, message.requests, message.sink, arrival=loop.time())
        self.scheduler.add(seqs)
        self.requests[message.requests[0].request_id] = seqs
        self._poke()
        self._report_load()
        return Admitted(self.replica_id, seqs[0].num_prompt_tokens)

    def _abort(self, request_id: str) -> None:
        for seq in self.requests.pop(request_id, ()):
            self.scheduler.abort(seq.seq_id)
        self._release_now()
        self._report_load()

    def _release_now(self) -> None:
        """Free the runner state of sequences that left, unless a step is running (then the
        next batch carries them)."""
        if not self.stepping and self.runner is not None and self.scheduler.released:
            self.runner.release(self.scheduler.released)
            self.scheduler.released = []

    def _context_ready(self, message: ContextReady) -> None:
        self.runner = message.runner
        self.context_ref = message.context
        if message.restarted:
            self.context_restarts += 1
        if self.state is ReplicaState.STARTING or message.restarted:
            self.state, self.reason = ReplicaState.HEALTHY, None
        self._poke()
        self._report_load()

    # -- the step loop: schedule, run, update ------------------------------------------

    async def _step_loop(self) -> None:
        try:
            while True:
                if self.runner is None or not self.scheduler.has_work:
                    self._wake = asyncio.get_running_loop().create_future()
                    await self._wake
                    continue
                runner = self.runner
                batch, seqs = self.scheduler.schedule()
                self.stepping = True
                try:
                    outputs = await runner.execute(batch)
                except asyncio.CancelledError:
                    raise
                except Exception as error:
                    self._context_failed(error)
                    continue
                finally:
                    self.stepping = False
                self.steps += 1
                chunks, finished = self.scheduler.update(seqs, outputs)
                for seq, chunk in chunks:
                    seq.sink.on_chunk(chunk)
                for seq in finished:
                    self._forget(seq)
                    seq.sink.on_finish(seq.request.choice_index, _usage(seq))
                self._release_now()
                self._report_load()
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.exception("%s: engine loop crashed", self.replica_id)
            self.context.self_ref.tell(_LoopCrashed(error))

    def _context_failed(self, error: Exception) -> None:
        """The runner failed mid-step: fail the running sequences, restart the context."""
        log.warning("%s: context failed: %r", self.replica_id, error)
        self.runner = None
        culprits = error.sequence_ids if isinstance(error, OutOfMemory) else ()
        for seq in self.scheduler.fail_running():
            self._forget(seq)
            if isinstance(error, OutOfMemory) and (not culprits or seq.seq_id in culprits):
                failure: BaseException = error
            else:
                failure = ReplicaFailed(f"replica {self.replica_id}: its context failed")
            seq.sink.on_error(seq.request.choice_index, failure, _usage(seq))
        if self.context_ref is not None:
            self.context_ref.tell(Poisoned(error))
        self._report_load()

    def _mark_failed(self, reason: str) -> None:
        log.error("%s: replica failed: %s", self.replica_id, reason)
        self.state, self.reason = ReplicaState.FAILED, reason
        self.runner = None
        self._fail_all(ReplicaFailed(f"replica {self.replica_id} failed: {reason}"))
        self._report_load()

    def _fail_all(self, error: ReplicaFailed) -> None:
        for seq in self.scheduler.drain_all():
            seq.sink.on_error(seq.request.choice_index, error, _usage(seq))
        self.requests.clear()

    def _forget(self, seq: Sequence) -> None:
        seqs = self.requests.get(seq.request.request_id)
        if seqs is not None and all(s.status in _DONE for s in seqs):
            del self.requests[seq.request.request_id]

    def _poke(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def _report_load(self) -> None:
        load = EngineLoad(
            deployment=self.deployment.name,
            replica_id=self.replica_id,
            state=self.state,
            waiting=len(self.scheduler.waiting),
            running=len(self.scheduler.running),
            context_restarts=self.context_restarts,
            reason=self.reason,
        )
        if load != self._last_load and self.coordinator is not None:
            try:
                self.coordinator.tell(load, sender=self.context.self_ref)
            except MailboxFull:
                return  # reports are idempotent: the next one carries the same facts
            self._last_load = load

    def statistics(self) -> EngineStatistics:
        return EngineStatistics(
            deployment=self.deployment.name,
            replica_id=self.replica_id,
            state=self.state,
            waiting=len(self.scheduler.waiting),
            running=len(self.scheduler.running),
            steps=self.steps,
            context_restarts=self.context_restarts,
            reason=self.reason,
        )


def _usage(seq: Sequence) -> Usage:
    return Usage(prompt_tokens=seq.num_prompt_tokens, completion_tokens=seq.num_output_tokens)
