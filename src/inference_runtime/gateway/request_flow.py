"""``RequestFlow``: one request's lifecycle: route, dispatch, stream, retry or fall back, finish.

It runs in the HTTP handler's own task, not in an actor of its own (the departure from
DESIGN.md's one actor per request is argued in docs/architecture.md): a request already has a
task, the handler's, and giving it a second one with a mailbox cost more CPU than the rest of
the flow. What the actor gave is kept: the engines' control events (a choice ended, failed)
queue on the flow and are handled one at a time in that task, between its awaits (a retry
runs there too); a client that goes away cancels the task, and ``close`` then aborts the
sequences in the engine and still meters the tokens produced so far.

Tokens go from the engine through this request's sink into its ``ResponseStream`` as before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from inference_runtime.actors import ActorRef
from inference_runtime.cluster import Release, Route, RouteLease
from inference_runtime.engine import AbortRequest, AddRequest, Admitted
from inference_runtime.errors import (
    Backpressure,
    BudgetExceeded,
    InferenceRuntimeError,
    NoHealthyReplica,
)
from inference_runtime.gateway.leases import acquire_lease, tell_reliably
from inference_runtime.gateway.retries import MAX_ATTEMPTS as MAX_ATTEMPTS
from inference_runtime.gateway.retries import Retries
from inference_runtime.gateway.stream import ResponseStream
from inference_runtime.metrics import RequestRecord, ReserveBudget, tell_record
from inference_runtime.metrics.budget import prompt_token_bound
from inference_runtime.types import Deployment, EngineRequest, TokenChunk, Usage

log = logging.getLogger("inference_runtime.gateway")
_MAX_ITL_SAMPLES = 4096
_ZEROS = (0.0,) * _MAX_ITL_SAMPLES


@dataclass(slots=True)
class RequestJob:
    """Everything a RequestFlow needs; ``groups`` holds one tuple of choices per prompt."""

    request_id: str
    deployment: Deployment
    groups: list[tuple[EngineRequest, ...]]
    stream: ResponseStream
    resolve: Callable[[str], Deployment | None]
    """Looks up fallback deployments by name."""
    session_key: str | None = None
    arrival: float = field(default_factory=lambda: asyncio.get_running_loop().time())
    choices: int = field(init=False)
    """Choices over all groups."""

    def __post_init__(self) -> None:
        groups = self.groups
        self.choices = len(groups[0]) if len(groups) == 1 else sum(map(len, groups))


@dataclass(frozen=True, slots=True)
class _ChoiceFailed:
    attempt: int
    error: BaseException


@dataclass(frozen=True, slots=True)
class _Stop:
    error: BaseException


class _AttemptSink:
    """The SequenceSink of one attempt of one prompt group; dead once the attempt is over."""

    __slots__ = ("alive", "attempt", "group", "owner")

    def __init__(self, owner: RequestFlow, attempt: int, group: int) -> None:
        self.owner, self.attempt, self.group, self.alive = owner, attempt, group, True

    def on_chunk(self, chunk: TokenChunk) -> None:
        if self.alive:
            self.owner.on_chunks([chunk])

    def on_chunks(self, chunks: list[TokenChunk]) -> None:
        if self.alive:
            self.owner.on_chunks(chunks)

    def on_finish(self, index: int, usage: Usage) -> None:
        self._ended(index, usage, None)

    def on_error(self, index: int, error: BaseException, usage: Usage) -> None:
        self._ended(index, usage, error)

    def _ended(self, index: int, usage: Usage, error: BaseException | None) -> None:
        if self.alive:
            if error is None:
                self.owner.choice_finished(self.group, index, usage)
            else:
                self.owner.post(_ChoiceFailed(self.attempt, error))


class RequestFlow:
    """Driven by the handler: ``start``, then ``next_batch`` until it is empty, and ``close``
    in a ``finally`` (also when the handler is cancelled)."""

    def __init__(self, job: RequestJob, *, coordinator: ActorRef, metrics: ActorRef | None) -> None:
        self.job = job
        self.coordinator = coordinator
        self.metrics = metrics
        self.deployment = job.deployment
        self.fallbacks = list(job.deployment.fallbacks)
        self.lease: RouteLease | None = None
        self.sinks: list[_AttemptSink] = []
        self.sent: list[str] = []
        self.retries = Retries()
        self.reservation: int | None = None
        self.prompt_tokens = 0
        self.ended: dict[tuple[int, int], Usage] = {}
        self.completion_tokens = 0
        self.admitted_at: float | None = None
        self.first_token_at: float | None = None
        self.last_token_at: float | None = None
        self.itl: list[float] = []
        self.done = False
        self.events: list[_ChoiceFailed | _Stop] = []
        """Failed choices and a stop, handled in the handler's task (the flow's mailbox)."""
        self.stopping = False
        self.dispatching = False
        self.now = asyncio.get_running_loop().time

    # -- the handler's side ------------------------------------------------------------

    async def start(self) -> None:
        """Route and admit (retrying, queueing or falling back as the deployment says); a
        request that cannot be served has its stream failed."""
        await self._dispatch()

    async def next_batch(self) -> list[TokenChunk]:
        """The next chunks to send, or ``[]`` once the stream has ended (see its ``usage`` or
        ``error``). Control events that came in meanwhile are handled first, one at a time."""
        stream = self.job.stream
        while True:
            if self.events:  # first: a retry drops what its failed attempt queued
                await self._handle_events()
            batch = await stream.next_batch()
            if batch or stream.ended:
                return batch

    def close(self) -> None:
        """The handler is done with the request. Ended: release and meter it. Not ended (the
        client went away, a write failed): abort its sequences and meter what was produced."""
        if self.done:
            return
        stream = self.job.stream
        if stream.ended and stream.error is None:
            self._finish("success")
            return
        self.done = True
        stream.fail(InferenceRuntimeError("the client went away"))
        self._record("cancelled", error_code="client_disconnected")
        self._abandon_attempt(abort=True)

    def stop(self, error: BaseException) -> None:
        """End the request with ``error`` (the gateway is stopping): at once (its sequences
        aborted, its stream failed), unless a dispatch (a route, an admission) is under way in
        the handler's task; then, like an engine's event, once that has ended, so that what it
        got is given back. Not at the handler's next wait in general: a handler blocked in a
        write to a client that does not read would never get there, while the engine kept
        filling the response."""
        if self.done or self.stopping:
            return
        if self.dispatching:
            self.stopping = True
            self.post(_Stop(error))
        else:
            self._fail(error)

    def post(self, event: _ChoiceFailed | _Stop) -> None:
        self.events.append(event)
        self.job.stream.interrupt()

    async def _handle_events(self) -> None:
        events = self.events
        while events and not self.done:
            event = events.pop(0)
            if isinstance(event, _Stop):
                self._fail(event.error)
            elif event.attempt == self.retries.attempt and self._choice_failed(event):
                await self._dispatch()  # a retry, before anything reached the client

    # -- the token path (called by the engine, not through the mailbox) -----------------

    def on_chunks(self, chunks: list[TokenChunk]) -> None:
        """Chunks that arrived together (one engine step, one network read): one clock read,
        one hand-over to the response. Chunks of one batch reach the client together, so the
        gaps between them are zero; the gap before the batch is measured."""
        now = self.now()
        tokens = 0
        first = 0
        for chunk in chunks:
            tokens += chunk.num_tokens
            if chunk.index == 0:  # a run of words: as many arrivals, at one time
                first += 1 if chunk.words is None else chunk.words.count
        self.completion_tokens += tokens
        if self.first_token_at is None:
            self.first_token_at = now
        if first:
            last, itl = self.last_token_at, self.itl
            if last is None:
                first -= 1
            elif len(itl) < _MAX_ITL_SAMPLES:
                itl.append(now - last)
                first -= 1
            if first and len(itl) < _MAX_ITL_SAMPLES:
                itl.extend(_ZEROS[: min(first, _MAX_ITL_SAMPLES - len(itl))])
            self.last_token_at = now
        self.job.stream.push_many(chunks)

    def choice_finished(self, group: int, index: int, usage: Usage) -> None:
        """A choice finished (called by the engine, like ``on_chunks``). When it is the last
        one, the response is complete at once: the client gets it before the bookkeeping
        (release, metering), which ``close`` does once the response is written."""
        self.ended[(group, index)] = usage
        if len(self.ended) == self.job.choices and self.admitted_at is not None:
            self.job.stream.finish(self._final_usage())

    # -- dispatch: route, reserve, admit; retry, queue or fall back ----------------------

    async def _dispatch(self) -> None:
        self.dispatching = True
        try:
            await self._dispatch_until_admitted()
        finally:
            self.dispatching = False

    async def _dispatch_until_admitted(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = self.job.arrival + self.deployment.serving.queue_timeout_s
        backoff = 0.002
        while not self.done and not self.stopping:
            try:
                await self._try_once()
                return
            except BudgetExceeded as error:
                budget = self.deployment.budget
                wait = max(error.retry_after, backoff)
                if budget and budget.on_exceeded == "throttle" and loop.time() + wait < deadline:
                    await asyncio.sleep(wait)
                    continue
                self._fail(error)
            except Backpressure as error:
                mode = self.deployment.serving.on_capacity_exhausted
                if mode == "queue" and loop.time() + backoff < deadline:
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 0.05)
                    continue
                if mode == "fallback" and self._next_fallback():
                    continue
                self._fail(error)
            except NoHealthyReplica as error:
                if self.retries.nothing_routable() or self._next_fallback():
                    continue
                # after replicas were tried, what went wrong there says more than "none left"
                self._fail(self.retries.last_error or error)
            except InferenceRuntimeError as error:
                if error.retryable and self.retries.own_tries_left():
                    continue  # the replica went away between route and admit
                self._fail(error)

    async def _try_once(self) -> None:
        retries = self.retries
        retries.attempt += 1
        lease = self.lease = await self._route()
        try:
            await self._reserve_budget()
            groups = range(len(self.job.groups))
            self.sinks = [_AttemptSink(self, retries.attempt, g) for g in groups]
            prompt_tokens = 0
            for group, sink in zip(self.job.groups, self.sinks, strict=True):
                # recorded before the ask: if we are cancelled while it is in flight, the
                # abort sent on stop reaches the engine after it (same mailbox, FIFO)
                self.sent.append(group[0].request_id)
                add = AddRequest(group, sink, isolate=retries.isolate)
                admitted: Admitted = await lease.engine.ask(add)
                prompt_tokens += admitted.prompt_tokens
            self.prompt_tokens = prompt_tokens
            self.job.stream.replica_id = lease.replica_id
            self.admitted_at = asyncio.get_running_loop().time()
            if len(self.ended) == self.job.choices:  # the engine finished before we got here
                self.job.stream.finish(self._final_usage())
        except InferenceRuntimeError as error:
            if not isinstance(error, Backpressure):  # a full replica is not a broken one
                retries.admission_failed(lease.replica_id, error)
            self._abandon_attempt()
            raise

    async def _route(self) -> RouteLease:
        tried = frozenset(self.retries.tried)
        route = Route(self.deployment.name, self.job.session_key, tried)
        return await acquire_lease(self.coordinator, route)

    async def _reserve_budget(self) -> None:
        dep = self.deployment
        if self.reservation is not None or dep.budget is None or self.metrics is None:
            return
        worst = sum((g[0].sampling.max_tokens or 4096) * len(g) for g in self.job.groups)
        prompt = sum(prompt_token_bound(g[0]) for g in self.job.groups)  # a bound, not a guess
        self.reservation = await self.metrics.ask(ReserveBudget(dep.name, prompt, worst))

    def _next_fallback(self) -> bool:
        """Move to the next fallback deployment, settling what was reserved on this one."""
        while self.fallbacks:
            name = self.fallbacks.pop(0)
            target = self.job.resolve(name)
            if target is None:
                log.warning("fallback %r of %r does not exist", name, self.deployment.name)
                continue
            self._record("rejected", error_code="fallback")
            self.deployment, self.reservation = target, None
            self.retries.restart()
            return True
        return False

    # -- endings -------------------------------------------------------------------------

    def _choice_failed(self, event: _ChoiceFailed) -> bool:
        """Fail the request, or abandon this attempt and answer True: retry it (see
        ``Retries``: a query of death is final, its suspects run isolated)."""
        assert self.lease is not None  # an event of the current attempt: its lease is held
        replica, stream = self.lease.replica_id, self.job.stream
        error = self.retries.verdict(event.error, replica, self.job.request_id)
        if (
            stream.emitted == 0
            and self.deployment.idempotent
            and self.retries.retry(error, replica)
        ):
            self._abandon_attempt()
            stream.discard()  # what the failed attempt produced never reached the client
            self.ended, self.completion_tokens = {}, 0
            self.first_token_at = self.last_token_at = None
            self.itl = []
            return True
        self._fail(error)
        return False

    def _final_usage(self) -> Usage:
        """What the engines reported is authoritative (a provider's own usage); counting the
        chunks stands in only for requests that never finish (cancelled). A prompt counts
        once per group, however many choices it has."""
        if len(self.ended) == 1:  # one prompt, one choice: the common case
            [usage] = self.ended.values()
            self.prompt_tokens = usage.prompt_tokens or self.prompt_tokens
            self.completion_tokens = usage.completion_tokens
            return Usage(
                prompt_tokens=self.prompt_tokens, completion_tokens=usage.completion_tokens
            )
        per_group: dict[int, int] = {}
        for (group, _), usage in self.ended.items():
            per_group[group] = max(per_group.get(group, 0), usage.prompt_tokens)
        reported = sum(per_group.values())
        self.prompt_tokens = reported or self.prompt_tokens  # else: what admission counted
        self.completion_tokens = sum(u.completion_tokens for u in self.ended.values())
        return Usage(prompt_tokens=self.prompt_tokens, completion_tokens=self.completion_tokens)

    def _fail(self, error: BaseException) -> None:
        self.job.stream.fail(error)
        code = getattr(error, "code", None) or type(error).__name__
        outcome = "rejected" if self.admitted_at is None else "error"
        self._finish(outcome, error_code=str(code))

    def _finish(self, outcome: str, *, error_code: str | None = None) -> None:
        if self.done:
            return
        self.done = True
        self._record(outcome, error_code=error_code)  # first: it names the lease's replica
        self._abandon_attempt(abort=outcome != "success")

    def _abandon_attempt(self, *, abort: bool = True) -> None:
        for sink in self.sinks:
            sink.alive = False
        self.sinks = []  # no actor <-> sink cycle: both are freed without the cyclic GC
        if self.lease is not None:
            if abort:
                for request_id in self.sent:
                    tell_reliably(self.lease.engine, AbortRequest(request_id))
            tell_reliably(self.coordinator, Release(self.lease.deployment, self.lease.replica_id))
            self.lease = None
        self.sent = []

    def _record(self, outcome: str, *, error_code: str | None = None) -> None:
        if self.metrics is None:
            return
        now = asyncio.get_running_loop().time()
        arrival = self.job.arrival
        record = RequestRecord(
            deployment=self.deployment.name,
            replica_id=self.lease.replica_id if self.lease else None,
            outcome=outcome,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            e2e_s=now - arrival,
            ttft_s=None if self.first_token_at is None else self.first_token_at - arrival,
            queue_s=None if self.admitted_at is None else self.admitted_at - arrival,
            inter_token_s=tuple(self.itl),
            error_code=error_code,
            reservation=self.reservation,
        )
        self.reservation = None
        tell_record(self.metrics, record)
