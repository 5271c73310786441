"""``EngineCoreActor``: one local generating replica. The actor takes control messages (add,
abort, context events); a step loop beside it schedules, runs the runner and emits tokens
straight into each request's sink."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from inference_runtime.engine.admission import build_sequences
from inference_runtime.engine.replica import EngineStatistics, GetEngineStats, ReplicaActor
from inference_runtime.engine.scheduler import Scheduler
from inference_runtime.engine.sequence import Sequence, SequenceStatus
from inference_runtime.engine.sink import SequenceSink
from inference_runtime.errors import OutOfMemory, ReplicaFailed
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
        self.stepping = False

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

    # -- the step loop: schedule, run, update ------------------------------------------

    async def _work_loop(self) -> None:
        while True:
            if self.runner is None or not self.scheduler.has_work:
                await self._idle()
                continue
            runner = self.runner
            batch, seqs = self.scheduler.schedule()
            self.stepping = True
            try:
                outputs = await runner.execute(batch)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self._step_failed(error)
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

    def _step_failed(self, error: Exception) -> None:
        """The runner failed mid-step: the running sequences fail (OOM's culprits with the
        OOM itself, the rest with a retryable error); waiting ones wait for the rebuild."""
        self._context_failed(error)
        culprits = error.sequence_ids if isinstance(error, OutOfMemory) else ()
        for seq in self.scheduler.fail_running():
            self._forget(seq)
            if isinstance(error, OutOfMemory) and (not culprits or seq.seq_id in culprits):
                failure: BaseException = error
            else:
                failure = ReplicaFailed(f"replica {self.replica_id}: its context failed")
            seq.sink.on_error(seq.request.choice_index, failure, _usage(seq))
        self._report_load()

    def _fail_all(self, error: ReplicaFailed) -> None:
        for seq in self.scheduler.drain_all():
            seq.sink.on_error(seq.request.choice_index, error, _usage(seq))
        self.requests.clear()

    def _forget(self, seq: Sequence) -> None:
        seqs = self.requests.get(seq.request.request_id)
        if seqs is not None and all(s.status in _DONE for s in seqs):
            del self.requests[seq.request.request_id]

    def _counts(self) -> tuple[int, int]:
        return len(self.scheduler.waiting), len(self.scheduler.running)


def _usage(seq: Sequence) -> Usage:
    return Usage(prompt_tokens=seq.num_prompt_tokens, completion_tokens=seq.num_output_tokens)
