"""EngineCoreActor over FakeRunner: batching, abort, backpressure, two-tier supervision."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from inference_runtime.actors import ActorRef, ActorSystem, Props
from inference_runtime.engine import (
    AbortRequest,
    AddRequest,
    EngineCoreActor,
    GetEngineStats,
    create_runner,
)
from inference_runtime.engine.replica import StepHung
from inference_runtime.errors import (
    Backpressure,
    ContextLengthExceeded,
    InferenceRuntimeError,
    OutOfMemory,
    ReplicaFailed,
    UnsupportedParameter,
)
from inference_runtime.testing import FakeRunner, ManualClock, RecordingSink
from inference_runtime.types import (
    Deployment,
    EngineLoad,
    EngineRequest,
    ReplicaState,
    SamplingParams,
)


def is_retryable(error: BaseException) -> bool:
    return isinstance(error, InferenceRuntimeError) and error.retryable


def deployment(**config: Any) -> Deployment:
    serving = config.pop("serving", {})
    return Deployment.from_dict(
        {"name": "fake", "runtime": "fake", "runtime_config": config, "serving": serving}
    )


async def start_engine(
    system: ActorSystem, dep: Deployment, *, loads: list[EngineLoad] | None = None
) -> tuple[ActorRef, FakeRunner]:
    from inference_runtime.actors import Actor

    class Coordinator(Actor):
        def receive(self, message: Any) -> None:
            if loads is not None:
                loads.append(message)

    coord = system.actor_of(Props(Coordinator, mailbox_capacity=None))
    runners: list[FakeRunner] = []

    def factory() -> Any:
        runner = create_runner(dep)
        runners.append(runner)  # type: ignore[arg-type]
        return runner

    engine = system.actor_of(
        Props(lambda: EngineCoreActor(dep, "r0", coordinator=coord, runner_factory=factory)),
        "engine",
    )
    for _ in range(100):
        stats = await engine.ask(GetEngineStats())
        if stats.state is ReplicaState.HEALTHY:
            break
        await asyncio.sleep(0.001)
    return engine, runners[0]


def request(rid: str, prompt: str = "hello world", n: int = 1, **sampling: Any) -> tuple[Any, ...]:
    params = SamplingParams(**sampling)
    return tuple(
        EngineRequest(
            request_id=rid, deployment="fake", prompt=prompt, sampling=params, choice_index=i
        )
        for i in range(n)
    )


@pytest.fixture
async def system() -> Any:
    system = ActorSystem.create("engine-test", clock=ManualClock())
    yield system
    await system.shutdown()


async def test_generates_deterministic_tokens(system: ActorSystem) -> None:
    engine, _ = await start_engine(system, deployment(output_tokens=8))
    sinks = []
    for _ in range(2):
        sink = RecordingSink()
        admitted = await engine.ask(AddRequest(request("a", temperature=0.0), sink))
        assert admitted.prompt_tokens == 2
        await sink.done
        sinks.append(sink)
    assert sinks[0].text() == sinks[1].text()
    assert len(sinks[0].text().split()) == 8
    assert sinks[0].chunks[-1].finish_reason == "stop"
    assert sinks[0].finished[0].completion_tokens == 9  # 8 words + EOS


async def test_max_tokens_and_n_choices(system: ActorSystem) -> None:
    engine, _ = await start_engine(system, deployment())
    sink = RecordingSink(choices=3)
    await engine.ask(AddRequest(request("a", n=3, max_tokens=5, seed=7), sink))
    await sink.done
    for i in range(3):
        assert sink.finished[i].completion_tokens == 5
        assert len(sink.text(i).split()) == 5
    assert sink.chunks[-1].finish_reason == "length"


async def test_seeded_sampling_reproducible(system: ActorSystem) -> None:
    engine, _ = await start_engine(system, deployment())
    texts = []
    for rid, seed in [("a", 1), ("b", 1), ("c", 2)]:
        sink = RecordingSink()
        await engine.ask(AddRequest(request(rid, max_tokens=10, seed=seed, temperature=0.9), sink))
        await sink.done
        texts.append(sink.text())
    assert texts[0] == texts[1]
    assert texts[0] != texts[2]


async def test_request_joins_while_others_decode(system: ActorSystem) -> None:
    engine, _ = await start_engine(system, deployment(output_tokens=1000))
    long = RecordingSink()
    await engine.ask(AddRequest(request("long", max_tokens=200), long))
    await long.first_chunk
    short = RecordingSink()
    await engine.ask(AddRequest(request("short", max_tokens=3), short))
    await short.done
    assert not long.done.done()  # the short one did not wait for the long one
    await long.done
    assert long.finished[0].completion_tokens == 200


async def test_abort_frees_the_slot(system: ActorSystem) -> None:
    dep = deployment(output_tokens=10_000, serving={"max_concurrent": 1, "queue_capacity": 0})
    engine, runner = await start_engine(system, dep)
    sink = RecordingSink()
    await engine.ask(AddRequest(request("a"), sink))
    await sink.first_chunk
    with pytest.raises(Backpressure):
        await engine.ask(AddRequest(request("b"), RecordingSink()))
    engine.tell(AbortRequest("a"))
    stats = await engine.ask(GetEngineStats())
    assert stats.running == 0
    second = RecordingSink()
    await engine.ask(AddRequest(request("b", max_tokens=2), second))
    await second.done
    assert runner.live_sequences <= 1


async def test_context_length_and_unsupported(system: ActorSystem) -> None:
    engine, _ = await start_engine(system, deployment(max_context=10))
    with pytest.raises(ContextLengthExceeded) as info:
        await engine.ask(AddRequest(request("a", prompt="w " * 8, max_tokens=5), RecordingSink()))
    assert info.value.code == "context_length_exceeded"
    with pytest.raises(UnsupportedParameter, match="presence_penalty"):
        await engine.ask(AddRequest(request("b", presence_penalty=0.5), RecordingSink()))
    stats = await engine.ask(GetEngineStats())
    assert stats.state is ReplicaState.HEALTHY


async def test_poison_restarts_context_and_next_request_succeeds(system: ActorSystem) -> None:
    loads: list[EngineLoad] = []
    engine, runner = await start_engine(system, deployment(poison_marker="POISON"), loads=loads)
    bystander = RecordingSink()
    await engine.ask(AddRequest(request("by", max_tokens=1000), bystander))
    await bystander.first_chunk
    bad = RecordingSink()
    await engine.ask(AddRequest(request("bad", prompt="POISON pill"), bad))
    await bad.done
    await bystander.done
    assert isinstance(bad.error(), ReplicaFailed)
    assert is_retryable(bad.error())
    assert (bad.error().in_step, bad.error().alone) == (True, True)  # its own prefill step
    assert isinstance(bystander.error(), ReplicaFailed)  # in flight on the poisoned context
    assert not bystander.error().in_step  # ... but not in the step: innocent
    good = RecordingSink()
    await engine.ask(AddRequest(request("good", max_tokens=3), good))
    await good.done
    assert good.finished[0].completion_tokens == 3
    stats = await engine.ask(GetEngineStats())
    assert (stats.context_restarts, stats.state) == (1, ReplicaState.HEALTHY)
    assert runner.rebuilds == 1
    assert loads[-1].context_restarts == 1


async def test_fourth_poison_within_window_fails_the_replica(system: ActorSystem) -> None:
    loads: list[EngineLoad] = []
    engine, runner = await start_engine(system, deployment(poison_marker="POISON"), loads=loads)
    for i in range(4):
        sink = RecordingSink()
        await engine.ask(AddRequest(request(f"p{i}", prompt="POISON"), sink))
        await sink.done
        for _ in range(50):
            stats = await engine.ask(GetEngineStats())
            if stats.state is ReplicaState.FAILED or (
                stats.context_restarts == i + 1 and runner.loaded
            ):
                break
            await asyncio.sleep(0.001)
    stats = await engine.ask(GetEngineStats())
    assert stats.state is ReplicaState.FAILED
    assert stats.context_restarts == 3
    assert "restart window" in (stats.reason or "")
    assert loads[-1].state is ReplicaState.FAILED
    with pytest.raises(ReplicaFailed):
        await engine.ask(AddRequest(request("after"), RecordingSink()))
    assert runner.closed


async def test_oom_fails_the_culprit_with_a_clear_error(system: ActorSystem) -> None:
    engine, runner = await start_engine(system, deployment(oom_marker="HUGE"))
    sink = RecordingSink()
    await engine.ask(AddRequest(request("a", prompt="HUGE prompt"), sink))
    await sink.done
    assert isinstance(sink.error(), OutOfMemory)
    assert not is_retryable(sink.error())
    good = RecordingSink()
    await engine.ask(AddRequest(request("b", max_tokens=2), good))
    await good.done
    assert runner.rebuilds == 1


async def test_unrecoverable_takes_the_replica_out_at_once(system: ActorSystem) -> None:
    engine, _ = await start_engine(system, deployment(fatal_marker="FATAL"))
    waiting = RecordingSink()
    sink = RecordingSink()
    await engine.ask(AddRequest(request("a", prompt="FATAL"), sink))
    await sink.done
    for _ in range(50):
        stats = await engine.ask(GetEngineStats())
        if stats.state is ReplicaState.FAILED:
            break
        await asyncio.sleep(0.001)
    assert stats.state is ReplicaState.FAILED
    assert stats.context_restarts == 0
    with pytest.raises(ReplicaFailed):
        await engine.ask(AddRequest(request("b"), waiting))


async def test_stopping_the_engine_fails_in_flight_requests(system: ActorSystem) -> None:
    engine, runner = await start_engine(system, deployment(output_tokens=100_000))
    sink = RecordingSink()
    await engine.ask(AddRequest(request("a"), sink))
    await sink.first_chunk
    engine.stop()
    await engine.wait_stopped()
    assert isinstance(sink.error(), ReplicaFailed)
    assert sink.errors[0][1].completion_tokens >= 1
    assert runner.closed


def test_unknown_runtime_config_is_an_error() -> None:
    with pytest.raises(ValueError, match="tokens_per_second"):
        FakeRunner(deployment(tokens_per_second=5))


async def test_requests_that_shared_the_failing_step_are_its_suspects(system: ActorSystem) -> None:
    engine, _ = await start_engine(
        system, deployment(poison_marker="POISON", token_latency_ms=20, output_tokens=5)
    )
    bad, other, later = RecordingSink(), RecordingSink(), RecordingSink()
    await asyncio.gather(  # both admitted before the loop runs: one first step
        engine.ask(AddRequest(request("bad", prompt="POISON pill"), bad)),
        engine.ask(AddRequest(request("other"), other)),
    )
    await asyncio.gather(bad.done, other.done)
    for sink in (bad, other):
        assert isinstance(sink.error(), ReplicaFailed)
        assert (sink.error().in_step, sink.error().alone) == (True, False)
    await engine.ask(AddRequest(request("later", max_tokens=2), later))
    await later.done
    assert later.finished[0].completion_tokens == 2


async def test_a_fatal_error_in_an_isolated_step_restarts_the_context(
    system: ActorSystem,
) -> None:
    """An isolated request had failed a step elsewhere: its step failing again is its fault,
    so even Unrecoverable restarts the context instead of taking this replica out too."""
    engine, runner = await start_engine(system, deployment(fatal_marker="FATAL"))
    sink = RecordingSink()
    await engine.ask(AddRequest(request("a", prompt="FATAL"), sink, isolate=True))
    await sink.done
    assert (sink.error().in_step, sink.error().alone) == (True, True)
    good = RecordingSink()
    await engine.ask(AddRequest(request("b", max_tokens=2), good))
    await good.done
    stats = await engine.ask(GetEngineStats())
    assert (stats.state, stats.context_restarts) == (ReplicaState.HEALTHY, 1)
    assert runner.rebuilds == 1


async def test_a_hung_step_fails_its_requests_as_suspects(system: ActorSystem) -> None:
    engine, _ = await start_engine(
        system, deployment(hang_marker="HANG", output_tokens=100_000, token_latency_ms=1)
    )
    running, hung = RecordingSink(), RecordingSink()
    await engine.ask(AddRequest(request("running"), running))
    await running.first_chunk
    await engine.ask(AddRequest(request("hung", prompt="HANG now"), hung))
    for _ in range(200):  # until the hung prefill is the step in flight
        stats = await engine.ask(GetEngineStats())
        if stats.running == 2:
            break
        await asyncio.sleep(0.001)
    await engine.ask(StepHung("no engine step for 2 s"))
    await asyncio.gather(running.done, hung.done)
    assert (hung.error().in_step, hung.error().alone) == (True, True)
    assert not running.error().in_step  # decoding, not in the prefill step that hung
    stats = await engine.ask(GetEngineStats())
    assert (stats.state, stats.running, stats.waiting) == (ReplicaState.FAILED, 0, 0)
