"""The engine contract, one suite over two implementations: the engine actor in this process
(``LocalLauncher``) and the Ray-backed replica (``RayLauncher``: a proxy actor here, the engine
in a Ray actor on a node of the session's simulated cluster). Both are launched the way the
deployment manager launches replicas, and spoken to with the same messages."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from inference_runtime.actors import Actor, ActorRef, ActorSystem, Props
from inference_runtime.cluster.launcher import LocalLauncher
from inference_runtime.cluster.placement import Placement
from inference_runtime.config import ClusterConfig
from inference_runtime.engine import (
    AbortRequest,
    AddRequest,
    GetEngineStats,
    ReplicaDown,
    create_runner,
)
from inference_runtime.errors import (
    Backpressure,
    ContextLengthExceeded,
    InferenceRuntimeError,
    OutOfMemory,
    ReplicaFailed,
    UnsupportedParameter,
)
from inference_runtime.testing import RecordingSink
from inference_runtime.types import (
    Deployment,
    EngineLoad,
    EngineRequest,
    ReplicaState,
    SamplingParams,
)

WAIT_S = 60.0


class Recorder(Actor):
    """Stands in for the coordinator (load reports, with their sender) and for the manager
    (``ReplicaDown``), and is the engine's parent."""

    def __init__(self, props: Props | None = None) -> None:
        self.props = props
        self.loads: list[tuple[EngineLoad, ActorRef | None]] = []
        self.downs: list[ReplicaDown] = []

    def receive(self, message: Any) -> Any:
        if isinstance(message, EngineLoad):
            self.loads.append((message, self.context.sender))
        elif isinstance(message, ReplicaDown):
            self.downs.append(message)
        elif message == "spawn":
            assert self.props is not None
            return self.context.spawn(self.props, "engine")
        elif message == "state":
            return self.loads, self.downs
        return None


class Engine:
    def __init__(self, ref: ActorRef, coordinator: ActorRef, parent: ActorRef) -> None:
        self.ref, self.coordinator, self.parent = ref, coordinator, parent

    async def ask(self, message: Any) -> Any:
        return await self.ref.ask(message, timeout=WAIT_S)

    async def stats(self) -> Any:
        return await self.ask(GetEngineStats())

    async def records(self) -> tuple[list[tuple[EngineLoad, ActorRef | None]], list[ReplicaDown]]:
        loads, _ = await self.coordinator.ask("state")
        _, downs = await self.parent.ask("state")
        return loads, downs


async def eventually(check: Callable[[], Awaitable[bool]], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"not within {WAIT_S:g} s: {what}")
        await asyncio.sleep(0.01)


@pytest.fixture(params=["local", "ray"])
def implementation(request: pytest.FixtureRequest) -> str:
    if request.param == "ray":
        request.getfixturevalue("ray_cluster")
    return str(request.param)


@pytest.fixture
async def launch(implementation: str) -> AsyncIterator[Callable[..., Awaitable[Engine]]]:
    system = ActorSystem.create("contract")
    if implementation == "ray":
        from inference_runtime.cluster.ray import RayBackend

        backend = RayBackend(ClusterConfig(backend="ray", replica_cpus=0.5, call_timeout_s=20))
        backend.connect()
        launcher: Any = backend.launcher()
    else:
        launcher = LocalLauncher()

    async def start(**config: Any) -> Engine:
        serving = config.pop("serving", {})
        dep = Deployment.from_dict(
            {"name": "fake", "runtime": "fake", "runtime_config": config, "serving": serving}
        )
        coordinator = system.actor_of(Props(Recorder, mailbox_capacity=None))
        props = launcher.props(
            dep, "fake#0", Placement(""), coordinator=coordinator, runner_factory=create_runner
        )
        parent = system.actor_of(Props(lambda: Recorder(props)))
        engine = Engine(await parent.ask("spawn"), coordinator, parent)

        async def healthy() -> bool:
            return bool((await engine.stats()).state is ReplicaState.HEALTHY)

        await eventually(healthy, "the engine is healthy")
        return engine

    yield start
    await system.shutdown()


def request(rid: str, prompt: str = "hello world", n: int = 1, **sampling: Any) -> tuple[Any, ...]:
    params = SamplingParams(**sampling)
    return tuple(
        EngineRequest(
            request_id=rid, deployment="fake", prompt=prompt, sampling=params, choice_index=i
        )
        for i in range(n)
    )


async def finished(sink: RecordingSink) -> RecordingSink:
    await asyncio.wait_for(sink.done, WAIT_S)
    return sink


async def test_tokens_stream_then_finish_with_usage(launch: Any) -> None:
    engine = await launch(output_tokens=8)
    texts = []
    for rid in ("a", "b"):
        sink = RecordingSink()
        admitted = await engine.ask(AddRequest(request(rid, temperature=0.0), sink))
        assert admitted.replica_id == "fake#0"
        assert admitted.prompt_tokens == 2
        await finished(sink)
        assert sink.chunks[-1].finish_reason == "stop"
        assert sink.finished[0].completion_tokens == 9  # 8 words + EOS
        texts.append(sink.text())
    assert texts[0] == texts[1]
    assert len(texts[0].split()) == 8


async def test_n_choices_and_max_tokens(launch: Any) -> None:
    engine = await launch()
    sink = RecordingSink(choices=3)
    await engine.ask(AddRequest(request("a", n=3, max_tokens=5, seed=7), sink))
    await finished(sink)
    assert {i: sink.finished[i].completion_tokens for i in range(3)} == {0: 5, 1: 5, 2: 5}
    assert all(len(sink.text(i).split()) == 5 for i in range(3))


async def test_backpressure_then_abort_frees_the_slot(launch: Any) -> None:
    engine = await launch(
        output_tokens=100_000,
        token_latency_ms=1,
        serving={"max_concurrent": 1, "queue_capacity": 0},
    )
    sink = RecordingSink()
    await engine.ask(AddRequest(request("a"), sink))
    await asyncio.wait_for(sink.first_chunk, WAIT_S)
    with pytest.raises(Backpressure) as info:
        await engine.ask(AddRequest(request("b"), RecordingSink()))
    assert info.value.retry_after > 0
    engine.ref.tell(AbortRequest("a"))

    async def idle() -> bool:
        stats = await engine.stats()
        return bool(stats.running == 0 and stats.waiting == 0)

    await eventually(idle, "the aborted sequence left the engine")
    second = RecordingSink()
    await engine.ask(AddRequest(request("c", max_tokens=2), second))
    await finished(second)
    assert second.finished[0].completion_tokens == 2
    assert not sink.done.done()  # an aborted request gets no more events


async def test_admission_errors_keep_their_type_and_fields(launch: Any) -> None:
    engine = await launch(max_context=10)
    with pytest.raises(ContextLengthExceeded) as info:
        await engine.ask(AddRequest(request("a", prompt="w " * 8, max_tokens=5), RecordingSink()))
    assert info.value.code == "context_length_exceeded"
    assert info.value.param == "messages"
    with pytest.raises(UnsupportedParameter, match="presence_penalty") as unsupported:
        await engine.ask(AddRequest(request("b", presence_penalty=0.5), RecordingSink()))
    assert unsupported.value.param == "presence_penalty"
    assert (await engine.stats()).state is ReplicaState.HEALTHY


async def test_poison_fails_running_requests_retryably_and_the_context_rebuilds(
    launch: Any,
) -> None:
    engine = await launch(poison_marker="POISON")
    bad = RecordingSink()
    await engine.ask(AddRequest(request("bad", prompt="POISON pill"), bad))
    await finished(bad)
    error = bad.error()
    assert isinstance(error, ReplicaFailed)
    assert isinstance(error, InferenceRuntimeError) and error.retryable

    async def rebuilt() -> bool:
        stats = await engine.stats()
        return bool(stats.context_restarts == 1 and stats.state is ReplicaState.HEALTHY)

    await eventually(rebuilt, "the context was rebuilt")
    good = RecordingSink()
    await engine.ask(AddRequest(request("good", max_tokens=3), good))
    await finished(good)
    assert good.finished[0].completion_tokens == 3


async def test_the_request_that_breaks_a_step_is_named_and_a_bystander_is_not(
    launch: Any,
) -> None:
    # what the gateway's retry rules read, across the process boundary too: the suspect (sent
    # as a retry's isolated request) failed in its step, alone; the request decoding beside it
    # was not in that step
    engine = await launch(poison_marker="POISON", token_latency_ms=10, output_tokens=500)
    innocent = RecordingSink()
    await engine.ask(AddRequest(request("innocent", max_tokens=500), innocent))
    await asyncio.wait_for(innocent.first_chunk, WAIT_S)
    suspect = RecordingSink()
    await engine.ask(AddRequest(request("suspect", prompt="POISON pill"), suspect, isolate=True))
    await finished(suspect)
    await finished(innocent)
    culprit, bystander = suspect.error(), innocent.error()
    assert isinstance(culprit, ReplicaFailed) and culprit.in_step and culprit.alone
    assert isinstance(bystander, ReplicaFailed) and not bystander.in_step


async def test_oom_fails_the_culprit_with_a_final_error(launch: Any) -> None:
    engine = await launch(oom_marker="HUGE")
    sink = RecordingSink()
    await engine.ask(AddRequest(request("a", prompt="HUGE prompt"), sink))
    await finished(sink)
    assert isinstance(sink.error(), OutOfMemory)
    assert not sink.error().retryable


async def test_load_reports_reach_the_coordinator_from_the_engine(launch: Any) -> None:
    engine = await launch(output_tokens=100_000, token_latency_ms=1)
    sink = RecordingSink()
    await engine.ask(AddRequest(request("a"), sink))
    await asyncio.wait_for(sink.first_chunk, WAIT_S)

    def last(running: int) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            loads, _ = await engine.records()
            return bool(loads) and loads[-1][0].running == running

        return check

    await eventually(last(1), "a load report with the request running")
    engine.ref.tell(AbortRequest("a"))
    await eventually(last(0), "an idle load report after the abort")
    loads, _ = await engine.records()
    assert {load.replica_id for load, _ in loads} == {"fake#0"}
    assert {sender for _, sender in loads} == {engine.ref}  # the coordinator checks the sender
    assert loads[-1][0].state is ReplicaState.HEALTHY


async def test_unrecoverable_error_tells_the_parent_replica_down(launch: Any) -> None:
    engine = await launch(fatal_marker="FATAL")
    sink = RecordingSink()
    await engine.ask(AddRequest(request("a", prompt="FATAL"), sink))
    await finished(sink)

    async def down() -> bool:
        _, downs = await engine.records()
        return bool(downs)

    await eventually(down, "ReplicaDown reached the parent")
    _, downs = await engine.records()
    assert downs[0].replica_id == "fake#0"
    with pytest.raises(ReplicaFailed):
        await engine.ask(AddRequest(request("b"), RecordingSink()))


async def test_stopping_the_engine_fails_in_flight_requests(launch: Any) -> None:
    engine = await launch(output_tokens=100_000, token_latency_ms=1)
    sink = RecordingSink()
    await engine.ask(AddRequest(request("a"), sink))
    await asyncio.wait_for(sink.first_chunk, WAIT_S)
    engine.ref.stop()
    await engine.ref.wait_stopped()
    assert isinstance(sink.error(), ReplicaFailed)
    assert sink.errors[0][1].completion_tokens >= 1


async def test_a_refused_request_comes_back_with_the_same_id(launch: Any) -> None:
    """``on_capacity_exhausted: queue`` retries a refused request, with the same id, on the
    same replica, after the request actor sent an abort for the refused attempt."""
    engine = await launch(
        output_tokens=100_000,
        token_latency_ms=1,
        serving={"max_concurrent": 1, "queue_capacity": 0},
    )
    busy = RecordingSink()
    await engine.ask(AddRequest(request("a"), busy))
    await asyncio.wait_for(busy.first_chunk, WAIT_S)
    with pytest.raises(Backpressure):
        await engine.ask(AddRequest(request("b"), RecordingSink()))
    engine.ref.tell(AbortRequest("b"))  # what the request actor sends after a refusal
    engine.ref.tell(AbortRequest("a"))

    async def idle() -> bool:
        stats = await engine.stats()
        return bool(stats.running == 0 and stats.waiting == 0)

    await eventually(idle, "the engine is idle")
    again = RecordingSink()
    await engine.ask(AddRequest(request("b", max_tokens=2), again))
    await finished(again)
    assert again.finished[0].completion_tokens == 2
