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
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from inference_runtime.actors import Deferred
from inference_runtime.engine.admission import OFF_LOOP_CHARS
from inference_runtime.engine.core import AbortRequest, AddRequest
from inference_runtime.engine.replica import ReplicaActor
from inference_runtime.errors import Backpressure, ReplicaFailed, RequestError
from inference_runtime.types import ReplicaState

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


class EmbeddingEngineActor(ReplicaActor):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue: deque[_Pending] = deque()
        self.pending: dict[str, _Pending] = {}
        self.waiting = 0
        self.batch: list[_Pending] = []
        self.runner_obj: EmbeddingModel
        self.tokenizing: dict[str, bool] = {}
        """Requests whose big inputs are tokenized off the loop -> cancelled meanwhile (as
        ``EngineCoreActor.encoding``)."""

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
            case _:
                return self.replica_message(message)
        return None

    def _admit(self, message: Embed) -> EmbedAdmitted | Deferred:
        self._check_admissible(message)
        if sum(len(x) for x in message.inputs if isinstance(x, str)) > OFF_LOOP_CHARS:
            # tokenizing megabytes takes seconds: in a worker thread, while this actor (and the
            # loop) go on; the ask is answered when it is done
            return Deferred(self._admit_tokenized(message))
        return self._queue(message, self.runner_obj.tokenize(message.inputs))

    def _check_admissible(self, message: Embed) -> None:
        if self.state in (ReplicaState.FAILED, ReplicaState.DRAINING):
            raise ReplicaFailed(f"replica {self.replica_id} is {self.state.value}")
        if not self.runner_obj.loaded:
            raise ReplicaFailed(f"replica {self.replica_id} is still loading its model")
        if not message.inputs:
            raise RequestError("input must not be empty", param="input")
        self.runner_obj.check_dimensions(message.dimensions)

    async def _admit_tokenized(self, message: Embed) -> EmbedAdmitted:
        self.tokenizing[message.request_id] = False
        try:
            ids = await asyncio.to_thread(self.runner_obj.tokenize, message.inputs)
        finally:
            cancelled = self.tokenizing.pop(message.request_id)
        if cancelled:  # the caller left while it was tokenized
            raise ReplicaFailed(f"request {message.request_id} was cancelled")
        self._check_admissible(message)  # the replica may have failed meanwhile
        return self._queue(message, ids)

    def _queue(self, message: Embed, ids: list[list[int]]) -> EmbedAdmitted:
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
            if request_id in self.tokenizing:
                self.tokenizing[request_id] = True
            return
        if pending in self.queue:
            self.queue.remove(pending)
            self.waiting -= len(pending.ids)
            self._report_load()
        pending.future.cancel()

    # -- the batch loop: take, run in a thread, answer ---------------------------------

    async def _work_loop(self) -> None:
        while True:
            runner: EmbeddingModel | None = self.runner
            if runner is None or not self.queue:
                await self._idle()
                continue
            batch = self.batch = self._take(runner.max_batch_size)
            self._report_load()
            try:
                answers = await asyncio.to_thread(_run_batch, runner, batch)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                self._context_failed(error)
                self._fail(batch, ReplicaFailed(f"replica {self.replica_id}: its context failed"))
                self._report_load()
                continue
            finally:
                self.batch = []
            self.steps += 1
            for pending, vectors in zip(batch, answers, strict=True):
                self.pending.pop(pending.request_id, None)
                if not pending.future.done():
                    tokens = sum(len(row) for row in pending.ids)
                    dim = len(vectors[0]) // 4
                    pending.future.set_result(EmbeddingResult(vectors, dim, tokens))
            self._report_load()

    def _take(self, limit: int) -> list[_Pending]:
        """The oldest requests whose inputs fit in ``limit`` (always at least one)."""
        batch = [self.queue.popleft()]
        size = len(batch[0].ids)
        while self.queue and size + len(self.queue[0].ids) <= limit:
            batch.append(self.queue.popleft())
            size += len(batch[-1].ids)
        self.waiting -= size
        return batch

    def _fail_all(self, error: ReplicaFailed) -> None:
        self._fail([*self.batch, *self.queue], error)
        self.queue.clear()
        self.waiting = 0

    def _fail(self, requests: list[_Pending], error: BaseException) -> None:
        for pending in requests:
            self.pending.pop(pending.request_id, None)
            if not pending.future.done():
                pending.future.set_exception(error)

    def _counts(self) -> tuple[int, int]:
        return self.waiting, sum(len(p.ids) for p in self.batch)


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
