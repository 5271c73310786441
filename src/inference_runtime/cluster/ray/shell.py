"""``RayReplicaActor``: a replica's proxy in the head's actor system; its engine runs in Ray.

The manager spawns it where it would spawn a local engine actor, and the coordinator routes to
it as to any engine: it answers the same messages (``AddRequest``/``AbortRequest``,
``Embed``/``CancelEmbed``, ``GetEngineStats``, ``RefreshKey``), forwards them to its
``EngineHost`` Ray actor, and pushes each request's token events, which arrive through a Ray
streaming generator as the engine produces them, into the request's sink. The host's load
reports reach the coordinator through it (a second streaming generator), so the coordinator
sees a Ray replica's load exactly as a local one's.

Starting: a placement group with one bundle (the replica's GPUs and ``cluster.replica_cpus``
CPUs, packed on one node, on the node ``DeploymentPlacementActor`` chose), then the host actor
in it. Losing the host (its process crashed, its node left the cluster) or the engine inside it
(supervision gave up) fails the replica as a local failure does: requests in flight get a
retryable ``ReplicaFailed`` (retried elsewhere before their first token), the parent gets
``ReplicaDown`` and re-places the replica. Stopping the proxy kills the host and removes the
placement group.

A gateway-only runtime (``cluster.role: gateway``) runs one of these per replica too, attached by
name to the host the head started (``attach=``): it sends requests and reads load reports as the
head's proxy does, but neither starts nor stops the host (it only cancels its own ``events``
stream).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import uuid
from typing import Any

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from inference_runtime.actors import Actor, ActorRef, Deferred
from inference_runtime.cluster.messages import ReplicaHost
from inference_runtime.cluster.placement import Placement
from inference_runtime.cluster.ray.wire import (
    ADMITTED,
    CHUNK,
    FINISH,
    REFUSED,
    RESULT,
    CallId,
    Down,
    actor_lost,
    decode_error,
    describe,
)
from inference_runtime.config import ClusterConfig
from inference_runtime.engine import (
    AbortRequest,
    AddRequest,
    Admitted,
    EngineStatistics,
    GetEngineStats,
    ReplicaDown,
)
from inference_runtime.engine.embedding_core import (
    CancelEmbed,
    Embed,
    EmbedAdmitted,
    EmbeddingResult,
)
from inference_runtime.errors import (
    InferenceRuntimeError,
    MailboxFull,
    PlacementFailed,
    ReplicaFailed,
)
from inference_runtime.remote.core import RefreshKey
from inference_runtime.types import Deployment, EngineLoad, EngineRequest, ReplicaState, Usage

log = logging.getLogger("inference_runtime.cluster.ray")
MAX_CONCURRENCY = 10_000
"""Calls a host runs at once: every admitted request holds one ``generate`` stream."""
ACTOR_PREFIX = "inference-replica:"
"""Host actors are named ``inference-replica:<replica id>:<unique>`` (``ray.get_actor``)."""


class _Call:
    """One request admitted on the host: its sink, and which choices are still open."""

    __slots__ = ("call_id", "open", "prompt_tokens", "request_id", "sink", "task", "tokens")

    def __init__(
        self, call_id: CallId, requests: tuple[EngineRequest, ...], sink: Any, prompt_tokens: int
    ) -> None:
        self.call_id = call_id
        self.request_id = requests[0].request_id
        self.sink = sink
        self.open = {r.choice_index for r in requests}
        self.prompt_tokens = prompt_tokens
        self.tokens: dict[int, int] = {}
        self.task: asyncio.Task[None] | None = None

    def fail(self, error: BaseException) -> None:
        for index in sorted(self.open):
            usage = Usage(
                prompt_tokens=self.prompt_tokens, completion_tokens=self.tokens.get(index, 0)
            )
            self.sink.on_error(index, error, usage)
        self.open.clear()


async def _next(stream: Any) -> Any:
    """The next value of a Ray streaming generator (``StopAsyncIteration`` at its end)."""
    ref = await stream.__anext__()
    return await ref


class RayReplicaActor(Actor):
    replied_errors = (InferenceRuntimeError,)

    def __init__(
        self,
        deployment: Deployment,
        replica_id: str,
        placement: Placement,
        *,
        coordinator: ActorRef | None,
        options: ClusterConfig,
        host_class: Any,
        attach: str | None = None,
    ) -> None:
        """``attach``: the name of a running host actor to use (a gateway's proxy of a replica
        the head placed); this proxy then neither starts nor stops the host."""
        self.deployment = deployment
        self.replica_id = replica_id
        self.placement = placement
        self.coordinator = coordinator
        self.options = options
        self.host_class = host_class
        self.attach = attach
        self.state = ReplicaState.STARTING
        self.reason: str | None = None
        self.failed = False
        self.stopping = False
        self.handle: Any = None
        self.handle_name = ""
        self.events: Any = None
        """The host's ``events`` stream for this proxy (cancelled when an attached one stops)."""
        self.ready = False
        self.group: Any = None
        self.node_id: str | None = None
        self.calls: dict[str, _Call] = {}
        self.admitting: dict[str, list[Any]] = {}
        """Requests sent to the host and not admitted yet: [call id, whether an abort came]."""
        self.token = uuid.uuid4().hex[:12]
        self.call_ids = itertools.count()
        self.embeds: dict[str, tuple[asyncio.Task[None], asyncio.Future[EmbeddingResult]]] = {}
        self.tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle -------------------------------------------------------------------------

    def pre_start(self) -> None:
        self._spawn(self._launch(), "launch")
        self._report(self._load())

    def _spawn(self, coro: Any, what: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.replica_id}:{what}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def _launch(self) -> None:
        if self.attach is not None:
            await self._attach(self.attach)
            return
        dep, opts = self.deployment, self.options
        bundle: dict[str, float] = {}
        if opts.replica_cpus > 0:
            bundle["CPU"] = opts.replica_cpus
        if dep.gpus:
            bundle["GPU"] = float(dep.gpus)
        if not bundle:
            bundle["CPU"] = 0.01
        target = self.placement.node_id or None
        try:
            self.group = placement_group(
                [bundle], strategy="STRICT_PACK", _soft_target_node_id=target
            )
            try:
                await asyncio.wait_for(self.group.ready(), opts.placement_timeout_s)
            except TimeoutError:
                raise PlacementFailed(
                    f"Ray did not reserve {bundle} for replica {self.replica_id} within "
                    f"{opts.placement_timeout_s:g} s"
                ) from None
            device = Placement("", tuple(range(dep.gpus))).device
            self.handle_name = f"{ACTOR_PREFIX}{self.replica_id}:{uuid.uuid4().hex[:8]}"
            self.handle = self.host_class.options(
                name=self.handle_name,
                num_cpus=bundle.get("CPU", 0.0),
                num_gpus=dep.gpus,
                max_restarts=0,
                max_concurrency=MAX_CONCURRENCY,
                scheduling_strategy=PlacementGroupSchedulingStrategy(
                    self.group, placement_group_bundle_index=0
                ),
            ).remote(dep.to_dict(), self.replica_id, device)
            node_id = await asyncio.wait_for(
                self.handle.start.remote(), opts.placement_timeout_s + opts.call_timeout_s
            )
        except asyncio.CancelledError:
            raise
        except Exception as error:
            self._fail(f"could not start on Ray: {describe(error)}")
            return
        self.node_id, self.ready = node_id, True
        if target is not None and node_id != target:
            log.warning(
                "replica %s: placed on node %s, Ray started it on %s",
                self.replica_id,
                target,
                node_id,
            )
        if self.coordinator is not None:  # the other gateways reach the engine by this name
            self.coordinator.tell(
                ReplicaHost(dep.name, self.replica_id, self.handle_name),
                sender=self.context.self_ref,
            )
        self._spawn(self._watch(), "watch")

    async def _attach(self, name: str) -> None:
        try:
            self.handle = ray.get_actor(name)
        except Exception as error:  # gone already: the head places it again
            self._fail(f"its Ray actor {name} was not found: {describe(error)}")
            return
        self.handle_name, self.ready = name, True
        self._spawn(self._watch(), "watch")

    async def _watch(self) -> None:
        """The host's load reports, then its end: ``Down`` (supervision gave up) or an error
        (the actor or its node is gone)."""
        try:
            stream = self.events = self.handle.events.remote()
            while True:
                try:
                    items = await _next(stream)
                except StopAsyncIteration:
                    break
                for item in items:
                    if isinstance(item, Down):
                        self._fail(item.reason)
                        return
                    self._on_load(item)
            self._fail("its Ray actor stopped")
        except asyncio.CancelledError:
            raise
        except Exception as error:
            self._fail(f"its Ray actor was lost: {describe(error)}")

    async def post_stop(self) -> None:
        self.stopping = True
        for task in list(self.tasks):
            task.cancel()
        self._fail_calls(ReplicaFailed(f"replica {self.replica_id} stopped"))
        if not self.failed:
            self.state, self.reason = ReplicaState.FAILED, self.reason or "stopped"
            self._report(self._load())
        if self.attach is not None:  # the head's replica: the head stops it; ours is the stream
            with contextlib.suppress(Exception):
                if self.events is not None:
                    ray.cancel(self.events)
            self.handle = self.events = None
            return
        try:
            if self.handle is not None:
                ray.kill(self.handle, no_restart=True)
            if self.group is not None:
                remove_placement_group(self.group)
        except Exception as error:  # the cluster may be gone already
            log.warning(
                "replica %s: cleaning up on Ray failed: %s", self.replica_id, describe(error)
            )
        self.handle = self.group = None

    # -- failure and load ------------------------------------------------------------------

    def _fail(self, reason: str) -> None:
        if self.failed or self.stopping:
            return
        self.failed = True
        log.error("%s: replica failed: %s", self.replica_id, reason)
        self.state, self.reason = ReplicaState.FAILED, reason
        self._fail_calls(ReplicaFailed(f"replica {self.replica_id} failed: {reason}"))
        self._report(self._load())
        parent = self.context.parent
        if parent is not None:
            parent.tell(ReplicaDown(self.replica_id, reason), sender=self.context.self_ref)

    def _fail_calls(self, error: ReplicaFailed) -> None:
        calls, self.calls = self.calls, {}
        for call in calls.values():
            if call.task is not None:
                call.task.cancel()
            call.fail(error)
        embeds, self.embeds = self.embeds, {}
        for task, _ in embeds.values():
            task.cancel()  # its future fails with a retryable ReplicaFailed

    def _on_load(self, load: EngineLoad) -> None:
        if self.failed:
            return
        self.state, self.reason = load.state, load.reason
        self._report(load)

    def _load(self) -> EngineLoad:
        return EngineLoad(
            deployment=self.deployment.name,
            replica_id=self.replica_id,
            state=self.state,
            reason=self.reason,
        )

    def _report(self, load: EngineLoad) -> None:
        if self.coordinator is not None:
            # reports are idempotent: when the mailbox is full, the next one says the same
            with contextlib.suppress(MailboxFull):
                self.coordinator.tell(load, sender=self.context.self_ref)

    # -- messages --------------------------------------------------------------------------

    async def receive(self, message: Any) -> Any:
        match message:
            case AddRequest():
                return self._admit(message)
            case AbortRequest(request_id=request_id):
                self._abort(request_id)
            case Embed():
                return self._embed(message)
            case CancelEmbed(request_id=request_id):
                self._cancel_embed(request_id)
            case GetEngineStats():
                return await self._stats()
            case RefreshKey():
                return bool(await self._call(self._host().refresh_key.remote()))
        return None

    def _host(self) -> Any:
        if self.failed or self.stopping:
            raise ReplicaFailed(f"replica {self.replica_id} is failed: {self.reason}")
        if not self.ready:
            raise ReplicaFailed(f"replica {self.replica_id} is still starting")
        return self.handle

    async def _call(self, awaitable: Any) -> Any:
        """A control call to the host, bounded; Ray's errors become retryable ones."""
        try:
            return await asyncio.wait_for(awaitable, self.options.call_timeout_s)
        except (InferenceRuntimeError, asyncio.CancelledError):
            raise
        except TimeoutError:
            raise ReplicaFailed(
                f"replica {self.replica_id}: no answer from its Ray actor within "
                f"{self.options.call_timeout_s:g} s"
            ) from None
        except StopAsyncIteration:
            raise ReplicaFailed(f"replica {self.replica_id}: the request was aborted") from None
        except Exception as error:
            raise actor_lost(self.replica_id, error) from None

    def _admit(self, message: AddRequest) -> Deferred:
        """Send the request now; answer when the host admitted it (one round trip), while
        this actor goes on with the next messages: admissions to one replica overlap."""
        requests = message.requests
        call_id = (self.token, next(self.call_ids))
        stream = self._host().generate.remote(call_id, requests, isolate=message.isolate)
        self.admitting[requests[0].request_id] = [call_id, False]
        return Deferred(self._admitted(message, call_id, stream))

    async def _admitted(self, message: AddRequest, call_id: CallId, stream: Any) -> Admitted:
        request_id = message.requests[0].request_id
        try:
            first = await self._call(_next(stream))
        finally:
            entry = self.admitting.get(request_id)
            aborted = entry is not None and entry[0] == call_id and entry[1]
            if entry is not None and entry[0] == call_id:
                del self.admitting[request_id]
        if first[0] == REFUSED:
            raise decode_error(first[1])
        assert first[0] == ADMITTED
        call = _Call(call_id, message.requests, message.sink, first[1])
        if self.failed or self.stopping:
            raise ReplicaFailed(f"replica {self.replica_id} is failed: {self.reason}")
        if not aborted:  # (an abort that came meanwhile was sent to the host already)
            self.calls[call.request_id] = call
            call.task = self._spawn(self._pump(call, stream, first[2]), "pump")
        return Admitted(self.replica_id, call.prompt_tokens)

    async def _pump(self, call: _Call, stream: Any, events: list[Any]) -> None:
        """The request's events, from the host's stream into its sink, as they come
        (``events``: those that came with the admission)."""
        sink = call.sink
        try:
            while call.open:
                if not events:
                    try:
                        events = await _next(stream)
                    except StopAsyncIteration:
                        break
                batch, events = events, []
                for event in batch:
                    kind = event[0]
                    if kind == CHUNK:
                        chunk = event[1]
                        call.tokens[chunk.index] = (
                            call.tokens.get(chunk.index, 0) + chunk.num_tokens
                        )
                        sink.on_chunk(chunk)
                    elif kind == FINISH:
                        call.open.discard(event[1])
                        sink.on_finish(event[1], event[2])
                    else:
                        call.open.discard(event[1])
                        sink.on_error(event[1], decode_error(event[2]), event[3])
            if call.open and self.calls.get(call.request_id) is call:
                call.fail(ReplicaFailed(f"replica {self.replica_id}: the stream ended early"))
        except asyncio.CancelledError:
            raise
        except Exception as error:  # the host is gone: the watch fails the replica
            call.fail(actor_lost(self.replica_id, error))
        finally:
            if self.calls.get(call.request_id) is call:
                del self.calls[call.request_id]

    def _abort(self, request_id: str) -> None:
        """Only a request on its way or running is aborted on the host: an abort of one that
        was refused or has ended must not hit the same request id's next attempt."""
        call_id = None
        pending = self.admitting.get(request_id)
        if pending is not None:
            pending[1] = True
            call_id = pending[0]
        call = self.calls.pop(request_id, None)
        if call is not None:
            call_id = call.call_id
            if call.task is not None:
                call.task.cancel()
        if call_id is not None and self.ready and not self.failed and not self.stopping:
            self.handle.abort.remote(call_id)

    def _embed(self, message: Embed) -> Deferred:
        stream = self._host().embed.remote(message.request_id, message.inputs, message.dimensions)
        return Deferred(self._embed_admitted(message.request_id, stream))

    async def _embed_admitted(self, request_id: str, stream: Any) -> EmbedAdmitted:
        first = await self._call(_next(stream))
        if first[0] == REFUSED:
            raise decode_error(first[1])
        if self.failed or self.stopping:
            raise ReplicaFailed(f"replica {self.replica_id} is failed: {self.reason}")
        future: asyncio.Future[EmbeddingResult] = asyncio.get_running_loop().create_future()
        task = self._spawn(self._embed_result(request_id, stream, future), "embed")
        self.embeds[request_id] = (task, future)
        return EmbedAdmitted(self.replica_id, first[1], future)

    async def _embed_result(
        self, request_id: str, stream: Any, future: asyncio.Future[EmbeddingResult]
    ) -> None:
        try:
            kind, value = await _next(stream)
            if future.done():
                return
            if kind == RESULT:
                future.set_result(value)
            else:
                future.set_exception(decode_error(value))
        except asyncio.CancelledError:
            if not future.done():
                future.set_exception(ReplicaFailed(f"replica {self.replica_id} stopped"))
            raise
        except Exception as error:
            if not future.done():
                future.set_exception(actor_lost(self.replica_id, error))
        finally:
            entry = self.embeds.get(request_id)
            if entry is not None and entry[0] is asyncio.current_task():
                del self.embeds[request_id]

    def _cancel_embed(self, request_id: str) -> None:
        entry = self.embeds.pop(request_id, None)
        if entry is not None:
            entry[1].cancel()  # the caller went away: nobody waits for it
            entry[0].cancel()
        if self.ready and not self.failed and not self.stopping:
            self.handle.cancel_embed.remote(request_id)

    async def _stats(self) -> EngineStatistics:
        if not self.ready or self.failed:
            return EngineStatistics(
                deployment=self.deployment.name,
                replica_id=self.replica_id,
                state=self.state,
                waiting=0,
                running=0,
                steps=0,
                context_restarts=0,
                reason=self.reason,
            )
        stats: EngineStatistics = await self._call(self.handle.stats.remote())
        return stats
