"""``VllmEngineActor``: one ``runtime: vllm`` replica.

vLLM schedules, batches and keeps the KV cache itself, so this actor has no step loop: each
admitted choice becomes one vLLM request, driven by a task that streams vLLM's outputs straight
into the request's sink (never through the mailbox). Same shell as every local replica
(``ReplicaActor``): the runner lives under the two-tier supervision, load goes to the coordinator,
and the gateway talks to it with ``AddRequest`` / ``AbortRequest``.

Admission runs the same checks as the step-loop engine (parameters, context window: a 400 before
any work) plus vLLM's own limits (``params.sampling_kwargs``); beyond ``serving.max_concurrent +
serving.queue_capacity`` sequences it answers ``Backpressure``. A cancelled request's tasks are
cancelled, which aborts them in vLLM.

Failures: a dead vLLM engine (``EngineDeadError``, a CUDA error) is ``ContextPoisoned``, and so is
an engine that produced nothing for ``stall_timeout_s`` while requests wait (a watchdog). Either
way the sequences in vLLM fail with a retryable ``ReplicaFailed``, the context restarts (the
runner rebuilds vLLM on the same GPUs, at most 3 times in 60 s, then the replica is taken out),
and requests admitted meanwhile wait for the rebuilt engine.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from inference_runtime.engine.admission import build_sequences
from inference_runtime.engine.core import AbortRequest, AddRequest, Admitted
from inference_runtime.engine.replica import ReplicaActor
from inference_runtime.engine.runner import RunnerInfo
from inference_runtime.engine.sink import SequenceSink
from inference_runtime.engine.vllm.params import Delta
from inference_runtime.errors import (
    Backpressure,
    ContextPoisoned,
    InferenceRuntimeError,
    ReplicaFailed,
)
from inference_runtime.types import EngineRequest, ReplicaState, TokenChunk, Usage
from inference_runtime.types.vllm_config import VllmConfig

log = logging.getLogger("inference_runtime.engine")


class StreamingRunner(Protocol):
    """What ``VllmEngineActor`` needs of its runner (``runner.VllmRunner``; tests use fakes)."""

    @property
    def info(self) -> RunnerInfo: ...

    async def load(self) -> None: ...

    def encode(self, request: EngineRequest) -> tuple[list[int], str]: ...

    def prepare(self, request: EngineRequest, max_tokens: int) -> Any:
        """vLLM's sampling parameters for one choice; raises ``RequestError`` (400)."""
        ...

    def generate(self, seq_id: str, prompt_ids: list[int], params: Any) -> AsyncIterator[Delta]:
        """vLLM's outputs for one sequence; closing the iterator early aborts it in vLLM."""
        ...

    def classify(self, error: BaseException) -> BaseException:
        """``ContextPoisoned`` for a dead engine or a device failure; else the error as ours."""
        ...

    async def rebuild(self) -> None: ...

    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class _CheckStall:
    """(timer) Has the engine produced anything lately while requests wait?"""


@dataclass(eq=False)
class _Stream:
    """One choice of one request, from admission to its end."""

    request: EngineRequest
    prompt_ids: list[int]
    params: Any
    sink: SequenceSink
    task: asyncio.Task[None] | None = field(default=None, repr=False)
    generation: int = 0
    """The engine generation it was submitted to (a rebuilt engine has the next one)."""
    tokens: int = 0
    started: bool = False
    """vLLM produced its first output (it is running, not waiting)."""
    done: bool = False

    @property
    def usage(self) -> Usage:
        return Usage(prompt_tokens=len(self.prompt_ids), completion_tokens=self.tokens)


class VllmEngineActor(ReplicaActor):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings = VllmConfig.of(self.deployment.runtime_config)
        self.pending: list[_Stream] = []
        """Admitted, not yet handed to vLLM (no engine right now: loading or rebuilding)."""
        self.active: dict[str, _Stream] = {}
        """In vLLM, by sequence id."""
        self.requests: dict[str, list[_Stream]] = {}
        self.generation = 0
        self.last_progress = 0.0

    def pre_start(self) -> None:
        super().pre_start()
        period = max(0.05, min(5.0, self.settings.stall_timeout_s / 4))
        self.context.schedule_repeatedly(period, _CheckStall(), key="stall")

    # -- control messages --------------------------------------------------------------

    def receive(self, message: Any) -> Any:
        match message:
            case AddRequest():
                return self._admit(message)
            case AbortRequest(request_id=request_id):
                self._abort(request_id)
            case _CheckStall():
                self._check_stall()
            case _:
                return self.replica_message(message)
        return None

    def _admit(self, message: AddRequest) -> Admitted:
        if self.state in (ReplicaState.FAILED, ReplicaState.DRAINING):
            raise ReplicaFailed(f"replica {self.replica_id} is {self.state.value}")
        serving = self.deployment.serving
        held = len(self.pending) + len(self.active)
        if held + len(message.requests) > serving.max_concurrent + serving.queue_capacity:
            raise Backpressure(
                f"replica {self.replica_id} is at capacity ({len(self.active)} sequences in "
                f"vLLM, {len(self.pending)} waiting)",
                retry_after=serving.retry_after_s,
            )
        runner = self.runner_obj
        seqs = build_sequences(runner, message.requests, message.sink, arrival=0.0)
        streams = [
            _Stream(
                request=seq.request,
                prompt_ids=seq.prompt_ids,
                params=runner.prepare(seq.request, seq.max_tokens),
                sink=message.sink,
            )
            for seq in seqs
        ]
        self.requests[message.requests[0].request_id] = streams
        self.pending.extend(streams)
        self._submit()
        self._report_load()
        return Admitted(self.replica_id, len(seqs[0].prompt_ids))

    def _abort(self, request_id: str) -> None:
        for stream in self.requests.pop(request_id, ()):
            stream.done = True
            if stream.task is not None:
                stream.task.cancel()  # closes vLLM's stream: vLLM aborts the request
            elif stream in self.pending:
                self.pending.remove(stream)
        self._report_load()

    # -- handing requests to vLLM ------------------------------------------------------

    def _submit(self) -> None:
        runner = self.runner
        if runner is None or not self.pending:
            return
        loop = asyncio.get_running_loop()
        if not self.active:
            self.last_progress = self._now()  # the stall clock runs only while work waits
        for stream in self.pending:
            stream.generation = self.generation
            stream.task = loop.create_task(self._drive(runner, stream))
            self.active[stream.request.sequence_id] = stream
        self.pending.clear()

    async def _drive(self, runner: StreamingRunner, stream: _Stream) -> None:
        request = stream.request
        index = request.choice_index
        finish: str | None = None
        try:
            async for delta in runner.generate(
                request.sequence_id, stream.prompt_ids, stream.params
            ):
                self.last_progress = self._now()
                self.steps += 1  # progress, as the health check reads it (vLLM steps itself)
                if not stream.started:
                    stream.started = True
                    self._report_load()
                stream.tokens += len(delta.token_ids)
                finish = delta.finish_reason
                if finish == "abort":  # vLLM gave up on it by itself
                    raise ReplicaFailed(
                        f"replica {self.replica_id}: vLLM aborted the request", in_step=True
                    )
                stream.sink.on_chunk(
                    TokenChunk(
                        request_id=request.request_id,
                        index=index,
                        text=delta.text,
                        token_ids=delta.token_ids,
                        finish_reason=finish,
                        logprobs=delta.logprobs,
                    )
                )
            if finish is None:
                raise ReplicaFailed(
                    f"replica {self.replica_id}: vLLM's stream ended early", in_step=True
                )
            self._end(stream)
            stream.sink.on_finish(index, stream.usage)
        except asyncio.CancelledError:
            self._end(stream)  # aborted (the client is gone) or failed with its engine
            raise
        except Exception as error:
            failure = runner.classify(error)
            if isinstance(failure, ContextPoisoned):
                self._poisoned(failure, stream.generation)
            if not stream.done:
                self._end(stream)
                if not isinstance(failure, InferenceRuntimeError) or isinstance(
                    failure, ContextPoisoned
                ):
                    log.warning("%s: vLLM request failed: %r", self.replica_id, error)
                    failure = ReplicaFailed(  # its own failure: a suspect of it
                        f"replica {self.replica_id}: vLLM failed: {error}", in_step=True
                    )
                stream.sink.on_error(index, failure, stream.usage)

    def _end(self, stream: _Stream) -> None:
        stream.done = True
        self.active.pop(stream.request.sequence_id, None)
        request_id = stream.request.request_id
        streams = self.requests.get(request_id)
        if streams is not None and all(s.done for s in streams):
            del self.requests[request_id]
        self._report_load()

    # -- failures ----------------------------------------------------------------------

    def _check_stall(self) -> None:
        if self.runner is None or not self.active:
            return
        silent = self._now() - self.last_progress
        if silent >= self.settings.stall_timeout_s:
            self._poisoned(
                ContextPoisoned(
                    f"vLLM produced nothing for {silent:.1f} s while {len(self.active)} "
                    f"sequence(s) waited (stall_timeout_s: {self.settings.stall_timeout_s:g})"
                ),
                self.generation,
            )

    def _poisoned(self, error: ContextPoisoned, generation: int) -> None:
        """The engine of ``generation`` is unusable: fail what is in it, rebuild it (once)."""
        if generation != self.generation or self.runner is None:
            return  # already handled: the rebuild is under way or done
        self.generation += 1
        # vLLM runs every active sequence in each of its steps: all of them were in the one
        # that failed (or stalled), and one request alone there is its cause
        alone = len({s.request.request_id for s in self.active.values()}) == 1
        failure = ReplicaFailed(
            f"replica {self.replica_id}: its vLLM engine failed: {error}",
            in_step=True,
            alone=alone,
        )
        for stream in list(self.active.values()):
            self._end(stream)
            if stream.task is not None:
                stream.task.cancel()
            stream.sink.on_error(stream.request.choice_index, failure, stream.usage)
        self._context_failed(error)  # runner = None until ContextReady; pending ones wait
        self._report_load()

    # -- ReplicaActor hooks ------------------------------------------------------------

    async def _work_loop(self) -> None:
        """Hands what was admitted while there was no engine to the (re)loaded one."""
        while True:
            await self._idle()
            self._submit()
            self._report_load()

    def _fail_all(self, error: ReplicaFailed) -> None:
        for stream in [*self.pending, *self.active.values()]:
            if stream.done:
                continue
            stream.done = True
            if stream.task is not None:
                stream.task.cancel()
            stream.sink.on_error(stream.request.choice_index, error, stream.usage)
        self.pending.clear()
        self.active.clear()
        self.requests.clear()

    def _counts(self) -> tuple[int, int]:
        running = sum(s.started for s in self.active.values())
        return len(self.pending) + len(self.active) - running, running

    def _now(self) -> float:
        return self.context.system.clock.now()
