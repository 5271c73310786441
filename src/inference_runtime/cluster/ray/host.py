"""``EngineHost``: the Ray actor that runs one replica's engine, on the node placement chose.

Inside the Ray worker process it builds its own small actor system: the replica's engine actor
(``EngineCoreActor``, ``EmbeddingEngineActor`` or ``RemoteEngineCoreActor``, as in one process),
under a parent that hears when supervision takes the engine out, and a stand-in coordinator that
hands the engine's load reports to the head. The head's proxy (``shell.RayReplicaActor``) calls:

- ``generate``: a streaming generator: admission, then the request's token events as the engine
  steps produce them (pushed, never polled); it ends when every choice ended or was aborted;
- ``abort``: stop a request (also when the abort overtakes its ``generate``);
- ``embed`` / ``cancel_embed``: the same for embeddings (admission, then the vectors);
- ``events``: a streaming generator of load reports and, if supervision gives up, ``Down``
  (one per subscriber: every gateway's proxy of this replica has its own);
- ``stats``, ``refresh_key``, ``node_id``, ``stop``.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator
from typing import Any

from inference_runtime.actors import (
    Actor,
    ActorRef,
    ActorSystem,
    ChildFailed,
    Directive,
    OneForOneStrategy,
    Props,
    SupervisorStrategy,
)
from inference_runtime.cluster.launcher import LocalLauncher
from inference_runtime.cluster.placement import Placement
from inference_runtime.cluster.ray.wire import (
    ADMITTED,
    CHUNK,
    ERROR,
    FAILED,
    FINISH,
    REFUSED,
    RESULT,
    CallId,
    Down,
    encode_error,
)
from inference_runtime.engine import (
    AbortRequest,
    AddRequest,
    EngineStatistics,
    GetEngineStats,
    ReplicaDown,
    create_runner,
)
from inference_runtime.engine.embedding_core import CancelEmbed, Embed
from inference_runtime.types import Deployment, EngineLoad, EngineRequest, TokenChunk, Usage

log = logging.getLogger("inference_runtime.cluster.ray")
_ABORTED_KEPT = 4096
_RIDE_ALONG_YIELDS = 3


class _Subscription:
    """One ``events`` stream's pending items: the latest load only, and the replica's fate."""

    def __init__(self, load: EngineLoad | None, down: Down | None) -> None:
        self.load = load
        self.down = down
        self.wake = asyncio.Event()
        if load is not None or down is not None:
            self.wake.set()

    async def take(self) -> list[Any]:
        await self.wake.wait()
        self.wake.clear()
        items: list[Any] = [self.load] if self.load is not None else []
        self.load = None
        if self.down is not None:
            items.append(self.down)
        return items


class _Relay:
    """Load reports and the replica's fate, for every ``events`` stream: one per gateway that
    routes to this replica. A new stream starts with the latest report (engines report on
    change only, so a gateway that attaches to an idle replica would otherwise never hear)."""

    def __init__(self) -> None:
        self.load: EngineLoad | None = None
        self.down: Down | None = None
        self.subscribers: set[_Subscription] = set()

    def subscribe(self) -> _Subscription:
        subscription = _Subscription(self.load, self.down)
        self.subscribers.add(subscription)
        return subscription

    def put(self, item: EngineLoad | Down) -> None:
        if isinstance(item, Down):
            self.down = self.down or item
        else:
            self.load = item
        for subscription in self.subscribers:
            if isinstance(item, Down):
                subscription.down = subscription.down or item
            else:
                subscription.load = item
            subscription.wake.set()


class _CoordinatorStub(Actor):
    def __init__(self, relay: _Relay) -> None:
        self.relay = relay

    def receive(self, message: Any) -> None:
        if isinstance(message, EngineLoad):
            self.relay.put(message)


class _Parent(Actor):
    """Spawns the engine and turns its loss into ``Down``."""

    def __init__(self, props: Props, relay: _Relay) -> None:
        self.props, self.relay = props, relay

    def pre_start(self) -> None:
        self.engine = self.context.spawn(self.props, "engine")

    def receive(self, message: Any) -> Any:
        match message:
            case ReplicaDown(reason=reason):
                self.relay.put(Down(reason))
            case ChildFailed(error=error):
                self.relay.put(Down(f"engine actor failed: {error!r}"))
            case "engine":
                return self.engine
        return None

    def supervisor_strategy(self) -> SupervisorStrategy:
        return OneForOneStrategy(decider=lambda error: Directive.STOP)


class _StreamSink:
    """A request's ``SequenceSink`` on this side: events queue up until the stream takes them."""

    __slots__ = ("closed", "events", "open", "wake")

    def __init__(self, choices: int) -> None:
        self.events: list[tuple[Any, ...]] = []
        self.open = choices
        self.closed = False
        self.wake = asyncio.Event()

    def on_chunk(self, chunk: TokenChunk) -> None:
        self.events.append((CHUNK, chunk))
        self.wake.set()

    def on_finish(self, index: int, usage: Usage) -> None:
        self.events.append((FINISH, index, usage))
        self.open -= 1
        self.wake.set()

    def on_error(self, index: int, error: BaseException, usage: Usage) -> None:
        self.events.append((ERROR, index, encode_error(error), usage))
        self.open -= 1
        self.wake.set()

    def close(self) -> None:
        self.closed = True
        self.wake.set()


class EngineHost:
    """One replica's engine in a Ray actor (an async actor: every method runs on its loop)."""

    def __init__(self, deployment: dict[str, Any], replica_id: str, device: str) -> None:
        self.deployment = Deployment.from_dict(deployment)
        self.replica_id = replica_id
        self.device = device
        self.system: ActorSystem | None = None
        self.engine: ActorRef | None = None
        self.relay = _Relay()
        self.calls: dict[CallId, tuple[str, _StreamSink]] = {}
        self.aborted: OrderedDict[CallId, None] = OrderedDict()

    async def start(self) -> str:
        """Build the actor system and the engine (it loads its model in the background);
        answers the Ray node id this actor runs on."""
        import ray

        dep, relay = self.deployment, self.relay
        system = self.system = ActorSystem.create("replica")
        stub = system.actor_of(Props(lambda: _CoordinatorStub(relay), mailbox_capacity=None), "dp")
        props = LocalLauncher().props(
            dep,
            self.replica_id,
            Placement("", ()),
            coordinator=stub,
            runner_factory=lambda d, device: create_runner(d, device=self.device),
        )
        parent = system.actor_of(Props(lambda: _Parent(props, relay)), "host")
        self.engine = await parent.ask("engine")
        node_id: str = ray.get_runtime_context().get_node_id()
        return node_id

    def _engine(self) -> ActorRef:
        if self.engine is None:
            raise RuntimeError("EngineHost.start() was not called")
        return self.engine

    async def generate(
        self, call_id: CallId, requests: tuple[EngineRequest, ...], *, isolate: bool = False
    ) -> AsyncIterator[Any]:
        """``call_id``: unique per call across the proxies of every gateway (a request id may
        come back in a later attempt: its abort must not hit the retry). ``isolate``: the
        request was in a step that failed elsewhere (``AddRequest.isolate``)."""
        engine = self._engine()
        request_id = requests[0].request_id
        sink = _StreamSink(len(requests))
        if call_id in self.aborted:
            del self.aborted[call_id]
            return  # aborted before it arrived: nothing to admit
        try:
            admitted = await engine.ask(AddRequest(requests, sink, isolate=isolate))
        except Exception as error:
            yield (REFUSED, encode_error(error))
            return
        self.calls[call_id] = (request_id, sink)
        done = False
        try:
            # a step that is quick (a short prefill) rides along with the admission: one
            # item less on the way back; a slow one is not waited for
            for _ in range(_RIDE_ALONG_YIELDS):
                if sink.events:
                    break
                await asyncio.sleep(0)
            events, sink.events = sink.events, []
            yield (ADMITTED, admitted.prompt_tokens, events)
            while True:
                if sink.events:  # what came while the last item was on its way goes first
                    events, sink.events = sink.events, []
                    yield events
                    continue
                if sink.open <= 0:
                    done = True
                    return
                if sink.closed:
                    return
                await sink.wake.wait()
                sink.wake.clear()
        finally:
            self.calls.pop(call_id, None)
            if not done and not sink.closed:  # the stream was cancelled from the head
                engine.tell(AbortRequest(request_id))

    async def abort(self, call_id: CallId) -> None:
        entry = self.calls.pop(call_id, None)
        if entry is None:  # it overtook its generate (or that one ended already)
            self.aborted[call_id] = None
            while len(self.aborted) > _ABORTED_KEPT:
                self.aborted.popitem(last=False)
            return
        request_id, sink = entry
        sink.close()
        self._engine().tell(AbortRequest(request_id))

    async def embed(
        self, request_id: str, inputs: tuple[Any, ...], dimensions: int | None
    ) -> AsyncIterator[Any]:
        engine = self._engine()
        try:
            admitted = await engine.ask(Embed(request_id, inputs, dimensions))
        except Exception as error:
            yield (REFUSED, encode_error(error))
            return
        yield (ADMITTED, admitted.prompt_tokens)
        try:
            result = await admitted.result
        except asyncio.CancelledError:
            yield (FAILED, encode_error(RuntimeError("cancelled")))
            return
        except Exception as error:
            yield (FAILED, encode_error(error))
            return
        yield (RESULT, result)

    async def cancel_embed(self, request_id: str) -> None:
        self._engine().tell(CancelEmbed(request_id))

    async def events(self) -> AsyncIterator[list[Any]]:
        subscription = self.relay.subscribe()
        try:
            while True:
                items = await subscription.take()
                yield items
                if any(isinstance(item, Down) for item in items):
                    return
        finally:
            self.relay.subscribers.discard(subscription)

    async def subscribers(self) -> int:
        """How many ``events`` streams are open (one per proxy: the head's and each
        gateway's); a stopped gateway's goes away."""
        return len(self.relay.subscribers)

    async def stats(self) -> EngineStatistics:
        stats: EngineStatistics = await self._engine().ask(GetEngineStats())
        return stats

    async def refresh_key(self) -> bool:
        from inference_runtime.remote.core import RefreshKey

        return bool(await self._engine().ask(RefreshKey()))

    async def stop(self) -> None:
        if self.system is not None:
            await self.system.shutdown()
            self.system = None
