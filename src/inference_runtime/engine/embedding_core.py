"""``EmbeddingEngineActor``: one local embeddings replica, batching across callers.

Embeddings have no decode loop, so continuous batching reduces to this: every request's inputs
join one queue, and a batch loop beside the actor runs one forward over everything queued (up to
the runner's ``max_batch_size`` inputs; a request's inputs stay together), in a worker thread so
the event loop keeps serving. The actor takes control messages only; each request's vectors come
back through the future its admission answered with. Load, rebuild after a poisoned context and
close go through the same two-tier supervision as ``EngineCoreActor`` (``engine.worker``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, cast

from inference_runtime.actors import (
    Actor,
    ActorRef,
    ChildFailed,
    Directive,
    OneForOneStrategy,
    Props,
    SupervisorStrategy,
)
from inference_runtime.engine.core import (
    AbortRequest,
    AddRequest,
    EngineStatistics,
    GetEngineStats,
)
from inference_runtime.engine.runner import ModelRunner
from inference_runtime.engine.worker import (
    ContextActor,
    ContextReady,
    Poisoned,
    WorkerActor,
    context_strategy,
)
from inference_runtime.errors import (
    Backpressure,
    InferenceRuntimeError,
    MailboxFull,
    ReplicaFailed,
    RequestError,
)
from inference_runtime.types import Deployment, EngineLoad, ReplicaState

log = logging.getLogger("inference_runtime.engine")
Inputs = Sequence[str | Sequence[int]]


class EmbeddingModel(Protocol):
    """What the engine needs from an embeddings runner (``runners.embeddings.EmbeddingRunner``);
    vectors are a float32 array ``[n, dim]`` (typed loosely: this module stays numpy-free)."""

    @property
    def max_batch_size(self) -> int: ...
    @property
    def loaded(self) -> bool: ...
    async def load(self) -> None: ...
    async def rebuild(self) -> None: ...
    async def close(self) -> None: ...
    def tokenize(self, inputs: Inputs) -> list[list[int]]: ...
    def check_dimensions(self, dimensions: int | None) -> None: ...
    def embed(self, inputs: Inputs, *, dimensions: int | None = None) -> tuple[Any, list[int]]: ...
    def truncate(self, vectors: Any, dimensions: int | None) -> Any: ...


@dataclass(frozen=True, slots=True)
class Embed:
    """(ask) Queue one request's inputs. Answers ``EmbedAdmitted``; raises ``RequestError``
    (``input`` too long or bad, ``dimensions`` not allowed), ``Backpressure`` (the queue holds
    ``serving.queue_capacity`` inputs) or ``ReplicaFailed``."""

    request_id: str
    inputs: tuple[str | tuple[int, ...], ...]
    dimensions: int | None = None


@dataclass(frozen=True, slots=True)
class EmbeddingResult:
    vectors: tuple[bytes, ...]
    """One little-endian float32 vector per input, in input order (OpenAI's base64 payload)."""
    dimension: int
    prompt_tokens: int


@dataclass(frozen=True, slots=True)
class EmbedAdmitted:
    replica_id: str
    prompt_tokens: int
    result: asyncio.Future[EmbeddingResult]
    """Resolves when the request's batch ran; fails with a retryable ``ReplicaFailed``."""


@dataclass(frozen=True, slots=True)
class CancelEmbed:
    """(tell) The caller went away: drop the request if still queued (idempotent)."""

    request_id: str


@dataclass(eq=False, slots=True)
class _Pending:
    request_id: str
    ids: list[list[int]]
    dimensions: int | None
    future: asyncio.Future[EmbeddingResult] = field(repr=False)


@dataclass(frozen=True, slots=True)
class _LoopCrashed:
    error: BaseException


class EmbeddingEngineActor(Actor):
    replied_errors = (InferenceRuntimeError,)

    def __init__(
        self,
        deployment: Deployment,
        replica_id: str,
        *,
        coordinator: ActorRef | None = None,
        runner_factory: Callable[[], EmbeddingModel],
        context_restart_window: tuple[int, float] = (3, 60.0),
    ) -> None:
        self.deployment = deployment
        self.replica_id = replica_id
        self.coordinator = coordinator
        self.runner_factory = runner_factory
        self.restart_window = context_restart_window
        self.queue: deque[_Pending] = deque()
        self.pending: dict[str, _Pending] = {}
        self.waiting = 0
        self.batch: list[_Pending] = []
        self.runner: EmbeddingModel | None = None
        self.context_ref: ActorRef | None = None
        self.state = ReplicaState.STARTING
        self.reason: str | None = None
        self.context_restarts = 0
        self.batches = 0
        self._wake: asyncio.Future[None] | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._last_load: EngineLoad | None = None

    # -- lifecycle ---------------------------------------------------------------------

    def pre_start(self) -> None:
        self.runner_obj = self.runner_factory()
        me = self.context.self_ref
        # the context only calls load/rebuild/close, which an EmbeddingModel has
        runner = cast(ModelRunner, self.runner_obj)
        ctx = Props(lambda: ContextActor(runner, me), mailbox_capacity=16)
        max_restarts, within = self.restart_window
        strategy = context_strategy(max_restarts=max_restarts, within=within)
        self.context.spawn(Props(lambda: WorkerActor(ctx, strategy)), "worker")
        self._loop_task = asyncio.get_running_loop().create_task(
            self._batch_loop(), name=f"embedding-loop:{me.path}"
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

    # -- control messages --------------------------------------------------------------

    def receive(self, message: Any) -> Any:
        match message:
            case Embed():
                return self._admit(message)
            case CancelEmbed(request_id=request_id):
                self._cancel(request_id)
            case AddRequest():
                raise RequestError(
                    f"The model `{self.deployment.name}` serves embeddings; it does not support "
                    "chat/completions",
                    param="model",
                )
            case AbortRequest():
                pass  # the abort that follows a refused AddRequest: nothing to stop
            case ContextReady(runner=runner, context=ctx, restarted=restarted):
                self.runner, self.context_ref = cast(EmbeddingModel, runner), ctx
                self.context_restarts += int(restarted)
                if self.state is ReplicaState.STARTING or restarted:
                    self.state, self.reason = ReplicaState.HEALTHY, None
                self._poke()
                self._report_load()
            case ChildFailed(error=error):
                self._mark_failed(f"context failed beyond its restart window: {error!r}")
            case GetEngineStats():
                return self.statistics()
            case _LoopCrashed(error=error):
                raise error
        return None

    def _admit(self, message: Embed) -> EmbedAdmitted:
        if self.state in (ReplicaState.FAILED, ReplicaState.DRAINING):
            raise ReplicaFailed(f"replica {self.replica_id} is {self.state.value}")
        if not self.runner_obj.loaded:
            raise ReplicaFailed(f"replica {self.replica_id} is still loading its model")
        if not message.inputs:
            raise RequestError("input must not be empty", param="input")
        self.runner_obj.check_dimensions(message.dimensions)
        ids = self.runner_obj.tokenize(message.inputs)
        capacity = self.deployment.serving.queue_capacity
        if self.waiting and self.waiting + len(ids) > capacity:
            raise Backpressure(
                f"replica {self.replica_id}: {self.waiting} inputs queued (capacity {capacity})",
                retry_after=self.deployment.serving.retry_after_s,
            )
        future: asyncio.Future[EmbeddingResult] = asyncio.get_running_loop().create_future()
        pending = _Pending(message.request_id, ids, message.dimensions, future)
        self.queue.append(pending)
        self.pending[message.request_id] = pending
        self.waiting += len(ids)
        self._poke()
        self._report_load()
        return EmbedAdmitted(self.replica_id, sum(len(row) for row in ids), future)

    def _cancel(self, request_id: str) -> None:
        pending = self.pending.pop(request_id, None)
        if pending is None:
            return
        if pending in self.queue:
            self.queue.remove(pending)
            self.waiting -= len(pending.ids)
            self._report_load()
        pending.future.cancel()

    # -- the batch loop: take, run in a thread, answer ---------------------------------

    async def _batch_loop(self) -> None:
        try:
            while True:
                runner = self.runner
                if runner is None or not self.queue:
                    self._wake = asyncio.get_running_loop().create_future()
                    await self._wake
                    continue
                batch = self.batch = self._take(runner.max_batch_size)
                self._report_load()
                try:
                    answers = await asyncio.to_thread(_run_batch, runner, batch)
                except asyncio.CancelledError:
                    raise
                except Exception as error:
                    self._context_failed(batch, error)
                    continue
                finally:
                    self.batch = []
                self.batches += 1
                for pending, vectors in zip(batch, answers, strict=True):
                    self.pending.pop(pending.request_id, None)
                    if not pending.future.done():
                        tokens = sum(len(row) for row in pending.ids)
                        dim = len(vectors[0]) // 4
                        pending.future.set_result(EmbeddingResult(vectors, dim, tokens))
                self._report_load()
        except asyncio.CancelledError:
            raise
        except Exception as error:
            log.exception("%s: embedding loop crashed", self.replica_id)
            self.context.self_ref.tell(_LoopCrashed(error))

    def _take(self, limit: int) -> list[_Pending]:
        """The oldest requests whose inputs fit in ``limit`` (always at least one)."""
        batch = [self.queue.popleft()]
        size = len(batch[0].ids)
        while self.queue and size + len(self.queue[0].ids) <= limit:
            batch.append(self.queue.popleft())
            size += len(batch[-1].ids)
        self.waiting -= size
        return batch

    def _context_failed(self, batch: list[_Pending], error: Exception) -> None:
        """The runner failed: its batch fails (retryable), the context restarts, the queue
        waits for the rebuilt runner."""
        log.warning("%s: context failed: %r", self.replica_id, error)
        self.runner = None
        self._fail(batch, ReplicaFailed(f"replica {self.replica_id}: its context failed"))
        if self.context_ref is not None:
            self.context_ref.tell(Poisoned(error))
        self._report_load()

    def _mark_failed(self, reason: str) -> None:
        log.error("%s: replica failed: %s", self.replica_id, reason)
        self.state, self.reason, self.runner = ReplicaState.FAILED, reason, None
        self._fail_all(ReplicaFailed(f"replica {self.replica_id} failed: {reason}"))
        self._report_load()

    def _fail_all(self, error: ReplicaFailed) -> None:
        self._fail([*self.batch, *self.queue], error)
        self.queue.clear()
        self.waiting = 0

    def _fail(self, requests: list[_Pending], error: BaseException) -> None:
        for pending in requests:
            self.pending.pop(pending.request_id, None)
            if not pending.future.done():
                pending.future.set_exception(error)

    def _poke(self) -> None:
        if self._wake is not None and not self._wake.done():
            self._wake.set_result(None)

    def _current_load(self) -> EngineLoad:
        return EngineLoad(
            deployment=self.deployment.name,
            replica_id=self.replica_id,
            state=self.state,
            waiting=self.waiting,
            running=sum(len(p.ids) for p in self.batch),
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
        """As ``EngineCoreActor`` answers; ``steps`` counts forwards (batches) run."""
        load = self._current_load()  # the same fields, but steps
        fields = {name: getattr(load, name) for name in load.__struct_fields__}
        return EngineStatistics(**fields, steps=self.batches)


def _run_batch(runner: EmbeddingModel, batch: list[_Pending]) -> list[tuple[bytes, ...]]:
    """In the worker thread: one ``embed`` over every input of the batch, then each request's
    rows cut to its ``dimensions`` and serialised, so the event loop gets bytes only."""
    flat = [row for pending in batch for row in pending.ids]
    vectors, _ = runner.embed(flat)
    answers: list[tuple[bytes, ...]] = []
    at = 0
    for pending in batch:
        rows = runner.truncate(vectors[at : at + len(pending.ids)], pending.dimensions)
        at += len(pending.ids)
        answers.append(tuple(row.astype("<f4").tobytes() for row in rows))
    return answers
