"""``EngineCoreActor``: one local generating replica. The actor takes control messages (add,
abort, context events); a step loop beside it schedules, runs the runner and emits tokens
straight into each request's sink."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from inference_runtime.actors import Deferred
from inference_runtime.engine.admission import (
    Encoded,
    build_sequences,
    encode_off_loop,
    encodes_off_loop,
)
from inference_runtime.engine.replica import EngineStatistics, GetEngineStats, ReplicaActor
from inference_runtime.engine.scheduler import Scheduler
from inference_runtime.engine.sequence import Sequence, SequenceStatus
from inference_runtime.engine.sink import SequenceSink
from inference_runtime.errors import ContextPoisoned, OutOfMemory, ReplicaFailed, Unrecoverable
from inference_runtime.types import EngineRequest, ReplicaState, Usage

_DONE = (SequenceStatus.FINISHED, SequenceStatus.ABORTED)
__all__ = ["AbortRequest", "AddRequest", "Admitted", "EngineCoreActor", "EngineStatistics",
           "GetEngineStats"]  # fmt: skip


@dataclass(frozen=True, slots=True)
class AddRequest:
    """Admit all choices of one request (ask). Answers ``Admitted``; raises Backpressure,
    ContextLengthExceeded, UnsupportedParameter or ReplicaFailed."""

    requests: tuple[EngineRequest, ...]
    sink: SequenceSink
    isolate: bool = False
    """The request was in a step that failed elsewhere: run it in steps of its own."""


@dataclass(frozen=True, slots=True)
class Admitted:
    replica_id: str
    prompt_tokens: int


@dataclass(frozen=True, slots=True)
class AbortRequest:
    """Stop generating for every choice of a request and free their slots (tell)."""

    request_id: str


class EngineCoreActor(ReplicaActor):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        serving = self.deployment.serving
        self.scheduler = Scheduler(
            max_num_seqs=serving.max_concurrent,
            max_batched_tokens=serving.max_batched_tokens,
            queue_capacity=serving.queue_capacity,
            retry_after=serving.retry_after_s,
        )
        self.requests: dict[str, list[Sequence]] = {}
        self.encoding: dict[str, bool] = {}
        """Requests whose prompt is being encoded off the loop -> aborted meanwhile."""
        self.stepping = False
        self.step: list[Sequence] = []
        """The sequences of the step in flight (while ``stepping``)."""

    # -- control messages --------------------------------------------------------------

    def receive(self, message: Any) -> Any:
        match message:
            case AddRequest():
                return self._admit(message)
            case AbortRequest(request_id=request_id):
                self._abort(request_id)
            case _:
                return self.replica_message(message)
        return None

    def _admit(self, message: AddRequest) -> Admitted | Deferred:
        if self.state in (ReplicaState.FAILED, ReplicaState.DRAINING):
            raise ReplicaFailed(f"replica {self.replica_id} is {self.state.value}")
        if encodes_off_loop(message.requests[0]):
            return Deferred(self._admit_encoded(message))
        return self._queue(message, None)

    async def _admit_encoded(self, message: AddRequest) -> Admitted:
        """A big prompt: encoded in a thread while the actor takes its next messages; an
        abort meanwhile is remembered, and the request is then not queued."""
        request_id = message.requests[0].request_id
        self.encoding[request_id] = False
        try:
            encoded = await encode_off_loop(self.runner_obj, message.requests)
        finally:
            aborted = self.encoding.pop(request_id)
        if aborted or self.state in (ReplicaState.FAILED, ReplicaState.DRAINING):
            raise ReplicaFailed(f"replica {self.replica_id}: {request_id} was not admitted")
        return self._queue(message, encoded)

    def _queue(self, message: AddRequest, encoded: Encoded | None) -> Admitted:
        loop = asyncio.get_running_loop()
        seqs = build_sequences(
            self.runner_obj, message.requests, message.sink, arrival=loop.time(), encoded=encoded
        )
        if message.isolate:
            for seq in seqs:
                seq.isolated = True
        self.scheduler.add(seqs)
        self.requests[message.requests[0].request_id] = seqs
        self._poke()
        self._report_load()
        return Admitted(self.replica_id, seqs[0].num_prompt_tokens)

    def _abort(self, request_id: str) -> None:
        if request_id in self.encoding:
            self.encoding[request_id] = True
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

    # -- the step loop: schedule, run, update ------------------------------------------

    async def _work_loop(self) -> None:
        while True:
            if self.runner is None or not self.scheduler.has_work:
                await self._idle()
                continue
            runner = self.runner
            batch, seqs = self.scheduler.schedule()
            self.stepping, self.step = True, seqs
            try:
                outputs = await runner.execute(batch)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self._step_failed(error, seqs)
                continue
            finally:
                self.stepping, self.step = False, []
            self.steps += 1
            chunks, finished = self.scheduler.update(seqs, outputs)
            for seq, chunk in chunks:
                seq.sink.on_chunk(chunk)
            for seq in finished:
                self._forget(seq)
                seq.sink.on_finish(seq.request.choice_index, _usage(seq))
            self._release_now()
            self._report_load()

    def _step_failed(self, error: Exception, step: list[Sequence]) -> None:
        """The runner failed mid-step: the running sequences fail (OOM's culprits with the
        OOM itself, the rest with a retryable error that says whether they were in the step,
        and alone there); waiting ones wait for the rebuild.

        A step that held only an isolated sequence failed because of its request, which had
        already failed a step elsewhere: the device is not to blame, so even ``Unrecoverable``
        restarts the context instead of taking the replica out (a device that is really gone
        fails its rebuild, and that escalates)."""
        alone = _alone(step)
        if isinstance(error, Unrecoverable) and alone and step[0].isolated:
            error = ContextPoisoned(f"{error} (in a step of a request that failed one before)")
        self._context_failed(error)
        culprits = error.sequence_ids if isinstance(error, OutOfMemory) else ()
        in_step = {seq.seq_id for seq in step}
        for seq in self.scheduler.fail_running():
            self._forget(seq)
            if isinstance(error, OutOfMemory) and (not culprits or seq.seq_id in culprits):
                failure: BaseException = error
            else:
                failure = self._lost(seq, in_step, alone, "its context failed")
            seq.sink.on_error(seq.request.choice_index, failure, _usage(seq))
        self._report_load()

    def _step_hung(self, reason: str) -> None:
        """The step in flight never returned: fail everything (the replica is about to be taken
        out), the step's requests as suspects of it. The step stays awaited until the stop."""
        step = self.step if self.stepping else []
        alone, in_step = _alone(step), {seq.seq_id for seq in step}
        self.state, self.reason, self.runner = ReplicaState.FAILED, reason, None
        for seq in self.scheduler.drain_all():
            failure = self._lost(seq, in_step, alone, f"its step hung ({reason})")
            seq.sink.on_error(seq.request.choice_index, failure, _usage(seq))
        self.requests.clear()
        self._report_load()

    def _lost(self, seq: Sequence, in_step: set[str], alone: bool, why: str) -> ReplicaFailed:
        if seq.seq_id not in in_step:
            return ReplicaFailed(f"replica {self.replica_id}: {why}")
        return ReplicaFailed(
            f"replica {self.replica_id}: {why}, with this request in the step",
            in_step=True,
            alone=alone,
        )

    def _fail_all(self, error: ReplicaFailed) -> None:
        for seq in self.scheduler.drain_all():
            seq.sink.on_error(seq.request.choice_index, error, _usage(seq))
        self.requests.clear()

    def _forget(self, seq: Sequence) -> None:
        seqs = self.requests.get(seq.request.request_id)
        if seqs is not None and all(s.status in _DONE for s in seqs):
            del self.requests[seq.request.request_id]

    def _counts(self) -> tuple[int, int]:
        scheduler = self.scheduler
        return len(scheduler.waiting), len(scheduler.running) + len(scheduler.solo)


def _alone(step: list[Sequence]) -> bool:
    """One request in the step (its choices may be several sequences)."""
    return bool(step) and all(s.request.request_id == step[0].request.request_id for s in step)


def _usage(seq: Sequence) -> Usage:
    return Usage(prompt_tokens=seq.num_prompt_tokens, completion_tokens=seq.num_output_tokens)
