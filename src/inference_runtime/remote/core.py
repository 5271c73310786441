"""``RemoteEngineCoreActor``: one remote replica: a bounded queue and a pool of worker slots over
one pooled HTTP client, with retries, a circuit breaker and rate limits.

Same shell as the local engines (``ReplicaActor``): its "runner" is a ``RemoteSession`` (the
client and the key) under the same two-tier supervision, and the gateway talks to it with the
same ``AddRequest`` / ``AbortRequest``. Each admitted request gets a slot task that calls the
upstream, streams its SSE into the request's sink, and decides, on a failure, by the one
classification table (``retry.py``): retry with backoff (only before the first token, and only
for idempotent deployments), re-read the key once on a 401, or fail with the mapped error.
Whatever else goes wrong in a slot fails its request (never leaves it unanswered), and every
error leaves the replica through ``_failed``, with the session's secrets redacted from it.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
import logging
import random
import traceback
from dataclasses import dataclass
from typing import Any, ClassVar

from inference_runtime.engine.core import AbortRequest, AddRequest, Admitted
from inference_runtime.engine.embedding_core import (
    CancelEmbed,
    Embed,
    EmbedAdmitted,
    EmbeddingResult,
)
from inference_runtime.engine.replica import ReplicaActor
from inference_runtime.engine.sink import SequenceSink
from inference_runtime.errors import (
    AuthenticationFailed,
    Backpressure,
    Conflict,
    InferenceRuntimeError,
    ReplicaFailed,
    RequestError,
    UpstreamError,
)
from inference_runtime.remote.circuit import CircuitBreakers
from inference_runtime.remote.config import RemoteConfig
from inference_runtime.remote.embeddings_call import call_embeddings
from inference_runtime.remote.job import NO_STREAM, Job
from inference_runtime.remote.providers import ProviderStream, provider_for
from inference_runtime.remote.ratelimit import Permit, RateLimiters
from inference_runtime.remote.retry import Action, backoff_delay, may_retry
from inference_runtime.remote.upstream import UpstreamFailure, call_upstream
from inference_runtime.types import EngineRequest, ReplicaState, Usage

log = logging.getLogger("inference_runtime.remote")

BREAKERS = CircuitBreakers()
"""Process-wide: one breaker per (provider, endpoint), whatever deployment calls it."""
LIMITERS = RateLimiters()
"""Process-wide: one limiter per (provider, key, model): deployments sharing a key share it."""


@dataclass(frozen=True, slots=True)
class RefreshKey:
    """(ask) Read the API key again now, for requests from here on (requests in flight keep
    the key they were sent with). Answers whether the key changed."""


class RemoteEngineCoreActor(ReplicaActor):
    direct_delivery: ClassVar[bool] = True  # admit and abort are short and synchronous

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.config = RemoteConfig.of(self.deployment)
        self.provider = provider_for(self.deployment.runtime)
        self.queue: list[Job] = []  # a heap by (priority, arrival)
        self.arrivals = itertools.count()
        self.active: dict[str, Job] = {}
        self.rng = random.Random()
        self._loop = asyncio.get_running_loop()
        self._report_pending = False
        endpoint = self.config.base_url
        self.breaker = BREAKERS.get(self.deployment.runtime, endpoint, self.config.circuit_breaker)

    # -- control messages --------------------------------------------------------------

    def receive(self, message: Any) -> Any:
        match message:
            case AddRequest(requests=group, sink=sink):
                return self._admit(group, sink)
            case AbortRequest(request_id=request_id) | CancelEmbed(request_id=request_id):
                self._abort(request_id)
            case Embed():
                return self._admit_embed(message)
            case RefreshKey():
                return self._refresh_key()
            case _:
                return self.replica_message(message)
        return None

    def _refresh_key(self) -> bool:
        if self.runner is None:
            return False
        try:
            changed: bool = self.runner.refresh_key()
        except ValueError as error:
            # the key's source is unreadable now (a file gone, a second line): the answer says
            # why and the session keeps the key it has, instead of this actor (and its asker,
            # the deployment manager) failing
            raise Conflict(
                f"{self.replica_id}: cannot read the new key ({error}); "
                "the session keeps its current key"
            ) from None
        return changed

    def _admit(self, group: tuple[EngineRequest, ...], sink: SequenceSink) -> Admitted:
        self._check_capacity()
        self.provider.validate(group, config=self.config)
        job = Job(
            group[0].request_id,
            group,
            sink,
            _estimate_prompt(group[0]),
            (group[0].priority, next(self.arrivals)),
        )
        self._queue(job)
        return Admitted(self.replica_id, job.estimate)

    def _check_capacity(self) -> None:
        if self.state in (ReplicaState.FAILED, ReplicaState.DRAINING):
            raise ReplicaFailed(f"replica {self.replica_id} is {self.state.value}")
        capacity = self.config.max_concurrent + self.deployment.serving.queue_capacity
        if len(self.queue) + len(self.active) >= capacity:
            raise Backpressure(
                f"replica {self.replica_id} is at capacity ({len(self.active)} calls upstream, "
                f"{len(self.queue)} waiting)",
                retry_after=self.deployment.serving.retry_after_s,
            )

    def _admit_embed(self, embed: Embed) -> EmbedAdmitted:
        if self.deployment.runtime != "openai":
            raise RequestError(
                f"The model `{self.deployment.name}` ({self.deployment.runtime}) does not serve "
                "embeddings",
                param="model",
            )
        self._check_capacity()
        chars = sum(len(i) if isinstance(i, str) else len(i) * 4 for i in embed.inputs)
        result: asyncio.Future[EmbeddingResult] = asyncio.get_running_loop().create_future()
        job = Job(
            embed.request_id, (), None, max(1, chars // 4), (0, next(self.arrivals)),
            embed=embed, result=result,
        )  # fmt: skip
        self._queue(job)
        return EmbedAdmitted(self.replica_id, job.estimate, result)

    def _queue(self, job: Job) -> None:
        heapq.heappush(self.queue, job)
        self._start_slots()
        self._report_soon()

    def _abort(self, request_id: str) -> None:
        job = self.active.get(request_id)
        if job is not None and job.task is not None:
            job.task.cancel()  # closes the upstream response: the provider stops generating
            return
        for queued in self.queue:
            if queued.request_id == request_id:
                self.queue.remove(queued)
                heapq.heapify(self.queue)
                self._report_soon()
                return

    # -- the slots: take from the queue while a slot is free ---------------------------

    async def _work_loop(self) -> None:
        """Starts queued work when the runner (the session) becomes ready; while it is ready,
        admissions and freed slots start work themselves, without waking this loop."""
        while True:
            self._start_slots()
            await self._idle()

    def _start_slots(self) -> None:
        """A slot task for each queued job, best first, while a slot is free."""
        if self.runner is None:
            return  # loading or rebuilding: the loop starts the queue once it is ready
        queue, active, limit = self.queue, self.active, self.config.max_concurrent
        started = False
        while queue and len(active) < limit:
            job = heapq.heappop(queue)
            job.task = task = self._loop.create_task(self._serve(job))
            active[job.request_id] = job
            task.add_done_callback(functools.partial(self._slot_free, job))
            started = True
        if started:
            self._report_soon()

    def _slot_free(self, job: Job, _task: object = None) -> None:
        self.active.pop(job.request_id, None)
        self._start_slots()
        self._report_soon()

    def _report_soon(self) -> None:
        """One load report for all the changes of this turn of the event loop (under load,
        many admissions and completions share one message to the coordinator)."""
        if not self._report_pending:
            self._report_pending = True
            self._loop.call_soon(self._report_now)

    def _report_now(self) -> None:
        self._report_pending = False
        self._report_load()

    async def _serve(self, job: Job) -> None:
        """One request, until it is answered or has failed for good: whatever goes wrong in
        its slot (a bug, a request that cannot be sent) fails it, never leaves it unanswered."""
        try:
            await self._serve_attempts(job)
        except asyncio.CancelledError:
            raise
        except Exception as error:
            reason = self._redact(f"{type(error).__name__}: {error}")
            log.error(
                "%s: request %s failed in its slot: %s\n%s",
                self.replica_id,
                job.request_id,
                reason,
                "".join(traceback.format_tb(error.__traceback__)),  # frames, not values
            )
            failed = UpstreamError(
                f"deployment {self.deployment.name!r}: the upstream call could not be made "
                f"({reason})"
            )
            self._failed(job, job.stream or NO_STREAM, failed)

    async def _serve_attempts(self, job: Job) -> None:
        attempt, refreshed = 0, False
        policy = self.config.retry
        while True:
            stream = self.provider.new_stream(job.group) if job.embed is None else NO_STREAM
            job.stream = stream
            try:
                await self._attempt(job, stream)
                self._finished(job, stream)
                return
            except asyncio.CancelledError:
                raise
            except UpstreamFailure as failure:
                verdict = failure.classification
            except InferenceRuntimeError as error:  # breaker open, rate limited: no call made
                self._failed(job, stream, error)
                return
            retry = may_retry(
                verdict,
                attempt=attempt,
                policy=policy,
                idempotent=self.deployment.idempotent,
                first_token_sent=stream.chunks_out > 0,
                session_rebuilt=refreshed,
            )
            if verdict.action is Action.REBUILD_SESSION and not refreshed:
                refreshed = True
                # a rotated key: read it again, for the retry (at once) or, when this request
                # may not be retried, for the next one
                self.runner.refresh_key()
                if retry:
                    continue
            if not retry:
                self._failed(job, stream, _as_ours(verdict.error))
                return
            await asyncio.sleep(
                backoff_delay(policy, attempt, retry_after=verdict.retry_after, rng=self.rng)
            )
            attempt += 1

    async def _attempt(self, job: Job, stream: ProviderStream) -> None:
        """One call under the rate limits, judged by the circuit breaker; a call that ends
        without a verdict (cancelled, refused by the rate limits) gives its half-open probe
        slot back."""
        ticket = self.breaker.before_request()
        try:
            permit = await self._permit(job) if self.config.rate_limits is not None else None
            try:
                if job.embed is not None:
                    answer = await call_embeddings(self.runner, self.config, job.embed)
                    if job.result is not None and not job.result.done():
                        job.result.set_result(answer)
                else:
                    assert job.sink is not None
                    await call_upstream(
                        self.runner, self.provider, self.config, job.group, stream, job.emit
                    )
            finally:
                if permit is not None:
                    usage = stream.usage
                    permit.settle(usage.total_tokens if usage else job.estimate + stream.chunks_out)
        except UpstreamFailure as failure:
            if failure.classification.counts_for_breaker:
                self.breaker.record_failure(ticket)
            else:
                self.breaker.record_success()  # the upstream answered: it is up
            raise
        except BaseException:
            self.breaker.release()
            raise
        self.breaker.record_success()

    async def _permit(self, job: Job) -> Permit:
        assert self.config.rate_limits is not None
        limiter = LIMITERS.get(
            self.deployment.runtime, self.runner.key, self.config.model, self.config.rate_limits
        )
        max_tokens = (job.group[0].sampling.max_tokens or 256) if job.group else 0
        deadline = asyncio.get_running_loop().time() + self.deployment.serving.queue_timeout_s
        return await limiter.acquire(job.estimate + max_tokens * len(job.group), deadline=deadline)

    def _finished(self, job: Job, stream: ProviderStream) -> None:
        if job.sink is None:
            return  # an embeddings answer went to its future
        counted = stream.usage or Usage(
            prompt_tokens=job.estimate, completion_tokens=stream.chunks_out
        )
        for position, request in enumerate(job.group):
            # the provider's usage covers the whole request: the first choice carries it
            usage = counted if position == 0 else Usage()
            job.sink.on_finish(request.choice_index, usage)

    def _failed(self, job: Job, stream: ProviderStream, error: BaseException) -> None:
        produced = Usage(
            prompt_tokens=job.estimate if stream.chunks_out else 0,
            completion_tokens=stream.chunks_out,
        )
        # the one way out of this replica for an error: what the upstream said (its message,
        # param, code) goes to the client and the logs with the session's secrets removed
        self.runner_obj.redactor.scrub(error)
        job.fail(error, produced)

    def _redact(self, text: str) -> str:
        return str(self.runner_obj.redactor(text))

    # -- ReplicaActor hooks ------------------------------------------------------------

    def _fail_all(self, error: ReplicaFailed) -> None:
        for job in [*self.queue, *self.active.values()]:
            job.fail(error, Usage())
            if job.task is not None:
                job.task.cancel()
        self.queue.clear()

    def _counts(self) -> tuple[int, int]:
        return len(self.queue), len(self.active)


def _as_ours(error: InferenceRuntimeError) -> InferenceRuntimeError:
    """An upstream's 401 is about this deployment's key, not the client's: a 502, not a 401."""
    if isinstance(error, AuthenticationFailed):
        return UpstreamError(f"the upstream refused this deployment's API key: {error}")
    return error


def _estimate_prompt(request: EngineRequest) -> int:
    chars = len(request.prompt or "")
    for message in request.messages or ():
        content = message.content
        chars += len(content) if content.__class__ is str else len(message.text())
    return max(1, chars // 4)
