"""``runtime: vllm`` without vLLM: its config checks, the sampling mapping, and
``VllmEngineActor`` over a scripted stand-in for vLLM (streaming, abort, backpressure, a dead
engine and a stalled one rebuilt under the two-tier supervision, escalation)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from inference_runtime.actors import Actor, ActorRef, ActorSystem, Props
from inference_runtime.engine import AbortRequest, AddRequest, GetEngineStats
from inference_runtime.engine.runner import RunnerInfo
from inference_runtime.engine.runtimes import ENGINE_ACTORS, RUNNERS, engine_actor_class
from inference_runtime.engine.vllm.core import VllmEngineActor
from inference_runtime.engine.vllm.params import (
    CAPABILITIES,
    Delta,
    gpu_indices_of,
    sampling_kwargs,
)
from inference_runtime.errors import (
    Backpressure,
    ContextLengthExceeded,
    ContextPoisoned,
    ReplicaFailed,
    UnsupportedParameter,
)
from inference_runtime.testing import ManualClock, RecordingSink
from inference_runtime.types import (
    Deployment,
    EngineLoad,
    EngineRequest,
    ReplicaState,
    SamplingParams,
)
from inference_runtime.types.vllm_config import VllmConfig

# -- config and parameters -------------------------------------------------------------------


def vllm_deployment(**config: Any) -> Deployment:
    serving = config.pop("serving", {})
    return Deployment.from_dict(
        {"name": "v", "runtime": "vllm", "model": "m", "runtime_config": config, "serving": serving}
    )


def test_registered_by_runtime_name() -> None:
    assert RUNNERS["vllm"].endswith(":VllmRunner")
    assert ENGINE_ACTORS["vllm"].endswith(":VllmEngineActor")
    assert engine_actor_class("vllm") is VllmEngineActor


def test_unknown_runtime_config_key_is_refused_when_the_config_is_read() -> None:
    with pytest.raises(ValueError, match="gpu_memory_utilisation") as caught:
        vllm_deployment(gpu_memory_utilisation=0.5)
    assert "gpu_memory_utilization" in str(caught.value)  # the known keys are listed
    assert "engine_args" in str(caught.value)
    with pytest.raises(ValueError, match="max_num_seqs"):
        vllm_deployment(max_num_seqs=0)
    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        vllm_deployment(gpu_memory_utilization=1.5)
    with pytest.raises(ValueError, match="own key"):
        vllm_deployment(engine_args={"max_model_len": 5})
    with pytest.raises(ValueError, match="enforce_eager"):
        vllm_deployment(enforce_eager="yes")


def test_engine_args_pass_through_when_set() -> None:
    config = VllmConfig.of(
        {
            "max_model_len": 4096,
            "gpu_memory_utilization": 0.8,
            "tensor_parallel_size": 2,
            "enforce_eager": True,
            "dtype": "bfloat16",
            "engine_args": {"swap_space": 4},
            "stall_timeout_s": 30,
            "gpu_indices": [2, 3],
        }
    )
    assert config.engine_kwargs() == {
        "max_model_len": 4096,
        "gpu_memory_utilization": 0.8,
        "tensor_parallel_size": 2,
        "enforce_eager": True,
        "dtype": "bfloat16",
        "swap_space": 4,
    }
    assert config.gpu_indices == (2, 3)
    assert VllmConfig.of({}).engine_kwargs() == {}  # unset: vLLM's defaults


def test_other_runtimes_keep_their_own_config() -> None:
    dep = Deployment.from_dict(
        {"name": "t", "runtime": "transformers", "runtime_config": {"kv_rows": 4}}
    )
    assert dep.runtime_config == {"kv_rows": 4}


def test_the_examples_are_valid_and_one_field_switches_the_runtime() -> None:
    from pathlib import Path

    import yaml

    from inference_runtime.config import RuntimeConfig, load_config

    root = Path(__file__).resolve().parents[3]
    example = load_config(root / "examples" / "vllm.yaml").deployments[0]
    assert (example.runtime, example.model) == ("vllm", "builtin:smollm2-135m-instruct")
    readme = (root / "README.md").read_text()
    block = readme.split("**vLLM** serves", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    config = RuntimeConfig.from_dict(yaml.safe_load(block))
    served = config.deployments[0]
    assert served.runtime == "vllm"
    assert VllmConfig.of(served.runtime_config).tensor_parallel_size == 1
    plain = {"name": "smollm2", "runtime": "transformers", "model": "builtin:x"}
    assert Deployment.from_dict({**plain, "runtime": "vllm"}).runtime == "vllm"


def test_sampling_parameters_map_to_vllms() -> None:
    sampling = SamplingParams(
        temperature=0.7,
        top_p=0.9,
        top_k=-1,
        seed=3,
        stop=("\n",),
        presence_penalty=0.5,
        frequency_penalty=-0.5,
        logprobs=True,
        top_logprobs=2,
    )
    assert sampling_kwargs(sampling, max_tokens=12) == {
        "n": 1,
        "max_tokens": 12,
        "temperature": 0.7,
        "top_p": 0.9,
        "top_k": 0,
        "seed": 3,
        "presence_penalty": 0.5,
        "frequency_penalty": -0.5,
        "stop": ["\n"],
        "logprobs": 2,
    }
    greedy = sampling_kwargs(SamplingParams(temperature=0.0, top_k=5), max_tokens=1)
    assert (greedy["temperature"], greedy["top_k"], greedy["stop"], greedy["logprobs"]) == (
        0.0,
        5,
        None,
        None,
    )
    assert sampling_kwargs(SamplingParams(logprobs=True), max_tokens=1)["logprobs"] == 0


def test_what_vllm_would_refuse_is_a_400_naming_the_parameter() -> None:
    wide = SamplingParams(logprobs=True, top_logprobs=8)
    with pytest.raises(UnsupportedParameter) as caught:
        sampling_kwargs(wide, max_tokens=4, max_logprobs=5)
    assert caught.value.param == "top_logprobs"
    assert "max_logprobs" in str(caught.value)


def test_gpu_indices_from_placement() -> None:
    assert gpu_indices_of("cuda:1,3") == (1, 3)
    assert gpu_indices_of("cuda:0") == (0,)
    assert gpu_indices_of("cuda") is None
    assert gpu_indices_of("cpu") is None


# -- the engine actor over a scripted vLLM ---------------------------------------------------


class EngineDead(Exception):
    """Stands for vLLM's EngineDeadError."""


class ScriptedVllm:
    """Streams ``max_tokens`` tokens ("t0 t1 ..."), one per event-loop turn; ``hold`` stops
    production (a stall); ``kill`` makes every stream fail like a dead engine."""

    def __init__(self) -> None:
        self.loads = 0
        self.rebuilds = 0
        self.closed = False
        self.dead = False
        self.flowing = asyncio.Event()
        self.flowing.set()
        self.aborted: list[str] = []
        self.submitted: list[str] = []

    @property
    def info(self) -> RunnerInfo:
        return RunnerInfo(
            runtime="vllm", transport="local", max_context=64, capabilities=CAPABILITIES
        )

    async def load(self) -> None:
        self.loads += 1

    def encode(self, request: EngineRequest) -> tuple[list[int], str]:
        text = request.prompt or ""
        return list(range(len(text.split()))), text

    def prepare(self, request: EngineRequest, max_tokens: int) -> Any:
        return sampling_kwargs(request.sampling, max_tokens=max_tokens, max_logprobs=5)

    async def generate(
        self, seq_id: str, prompt_ids: list[int], params: Any
    ) -> AsyncIterator[Delta]:
        self.submitted.append(seq_id)
        count = params["max_tokens"]
        try:
            for i in range(count):
                await self.flowing.wait()
                await asyncio.sleep(0)
                if self.dead:
                    raise EngineDead("engine core died")
                yield Delta(f"t{i} ", (i,), "length" if i == count - 1 else None)
        except (asyncio.CancelledError, GeneratorExit):
            self.aborted.append(seq_id)
            raise

    def classify(self, error: BaseException) -> BaseException:
        if isinstance(error, EngineDead):
            return ContextPoisoned(f"vLLM engine failed: {error!r}")
        return error

    def kill(self) -> None:
        self.dead = True

    async def rebuild(self) -> None:
        self.rebuilds += 1
        self.dead = False
        self.flowing.set()

    async def close(self) -> None:
        self.closed = True


@pytest.fixture
async def system() -> Any:
    system = ActorSystem.create("vllm-engine-test", clock=ManualClock())
    yield system
    await system.shutdown()


async def start(
    system: ActorSystem, dep: Deployment, loads: list[EngineLoad] | None = None
) -> tuple[ActorRef, ScriptedVllm]:
    class Coordinator(Actor):
        def receive(self, message: Any) -> None:
            if loads is not None:
                loads.append(message)

    coord = system.actor_of(Props(Coordinator, mailbox_capacity=None))
    runner = ScriptedVllm()
    engine = system.actor_of(
        Props(
            lambda: VllmEngineActor(dep, "v#0", coordinator=coord, runner_factory=lambda: runner)
        ),
        "engine",
    )
    await until(engine, lambda s: s.state is ReplicaState.HEALTHY)
    return engine, runner


async def until(engine: ActorRef, check: Any, tries: int = 500) -> Any:
    for _ in range(tries):
        stats = await engine.ask(GetEngineStats())
        if check(stats):
            return stats
        await asyncio.sleep(0.001)
    raise AssertionError(f"never reached: {stats}")


def request(rid: str, prompt: str = "hello world", n: int = 1, **sampling: Any) -> Any:
    params = SamplingParams(**sampling)
    return tuple(
        EngineRequest(
            request_id=rid, deployment="v", prompt=prompt, sampling=params, choice_index=i
        )
        for i in range(n)
    )


async def test_streams_every_choice_into_the_sink_with_usage(system: ActorSystem) -> None:
    engine, runner = await start(system, vllm_deployment())
    sink = RecordingSink(choices=2)
    admitted = await engine.ask(AddRequest(request("a", n=2, max_tokens=4), sink))
    assert admitted.prompt_tokens == 2
    await sink.done
    for i in range(2):
        assert sink.text(i) == "t0 t1 t2 t3 "
        assert sink.finished[i].completion_tokens == 4
        assert sink.finished[i].prompt_tokens == 2
    assert sink.chunks[-1].finish_reason == "length"
    assert sorted(runner.submitted) == ["a/0", "a/1"]
    stats = await until(engine, lambda s: s.running == 0 and s.waiting == 0)
    assert stats.state is ReplicaState.HEALTHY
    # every output counts as progress: the manager's hung-engine check reads ``steps``
    assert stats.steps == len(sink.chunks)


async def test_max_tokens_defaults_to_the_room_left(system: ActorSystem) -> None:
    engine, _ = await start(system, vllm_deployment())
    sink = RecordingSink()
    await engine.ask(AddRequest(request("a", prompt="one two three four"), sink))
    await sink.done
    assert sink.finished[0].completion_tokens == 64 - 4


async def test_admission_checks_come_before_any_work(system: ActorSystem) -> None:
    engine, runner = await start(system, vllm_deployment())
    with pytest.raises(ContextLengthExceeded):
        await engine.ask(AddRequest(request("a", max_tokens=100), RecordingSink()))
    with pytest.raises(UnsupportedParameter):
        await engine.ask(AddRequest(request("b", logprobs=True, top_logprobs=9), RecordingSink()))
    assert runner.submitted == []


async def test_abort_cancels_the_vllm_request(system: ActorSystem) -> None:
    engine, runner = await start(system, vllm_deployment())
    runner.flowing.clear()
    sink = RecordingSink()
    await engine.ask(AddRequest(request("a", max_tokens=50), sink))
    await until(engine, lambda s: s.waiting == 1)
    engine.tell(AbortRequest("a"))
    await until(engine, lambda s: s.waiting == 0 and s.running == 0)
    for _ in range(100):
        if runner.aborted:
            break
        await asyncio.sleep(0.001)
    assert runner.aborted == ["a/0"]
    assert not sink.done.done()  # an aborted request's sink hears nothing more


async def test_backpressure_beyond_concurrency_and_queue(system: ActorSystem) -> None:
    dep = vllm_deployment(serving={"max_concurrent": 1, "queue_capacity": 1})
    engine, runner = await start(system, dep)
    runner.flowing.clear()
    for rid in ("a", "b"):
        await engine.ask(AddRequest(request(rid, max_tokens=5), RecordingSink()))
    with pytest.raises(Backpressure):
        await engine.ask(AddRequest(request("c", max_tokens=5), RecordingSink()))
    runner.flowing.set()


async def test_a_dead_engine_fails_what_it_ran_and_is_rebuilt(system: ActorSystem) -> None:
    loads: list[EngineLoad] = []
    engine, runner = await start(system, vllm_deployment(), loads)
    sinks = [RecordingSink() for _ in range(3)]
    for i, sink in enumerate(sinks):
        await engine.ask(AddRequest(request(f"r{i}", max_tokens=60), sink))
    await sinks[0].first_chunk
    runner.kill()
    for sink in sinks:
        await sink.done
        assert isinstance(sink.error(), ReplicaFailed)  # retryable: 503, or another replica
        assert (sink.error().in_step, sink.error().alone) == (True, False)  # vLLM ran all 3
    assert sinks[0].errors[0][1].completion_tokens >= 1  # what was produced is counted
    stats = await until(engine, lambda s: s.context_restarts == 1)
    assert stats.state is ReplicaState.HEALTHY
    assert runner.rebuilds == 1
    good = RecordingSink()
    await engine.ask(AddRequest(request("after", max_tokens=3), good))
    await good.done
    assert good.finished[0].completion_tokens == 3
    assert loads[-1].context_restarts == 1


async def test_a_stalled_engine_is_poisoned_by_the_watchdog(system: ActorSystem) -> None:
    clock = system.clock
    assert isinstance(clock, ManualClock)
    engine, runner = await start(system, vllm_deployment(stall_timeout_s=8))
    idle_for_long = clock.advance(60)  # idle: no request waits, so no stall
    assert idle_for_long >= 0
    sink = RecordingSink()
    await engine.ask(AddRequest(request("a", max_tokens=60), sink))
    await sink.first_chunk
    runner.flowing.clear()  # vLLM stops producing
    await asyncio.sleep(0.01)
    clock.advance(4)
    await asyncio.sleep(0.01)
    assert not sink.done.done()  # under the timeout: still waiting
    clock.advance(6)
    await sink.done
    assert isinstance(sink.error(), ReplicaFailed)
    assert "produced nothing" in str(sink.error())
    assert sink.error().alone  # the only request in the stalled engine: its likely cause
    await until(engine, lambda s: s.context_restarts == 1 and s.state is ReplicaState.HEALTHY)
    good = RecordingSink()
    await engine.ask(AddRequest(request("b", max_tokens=2), good))
    await good.done
    assert good.finished[0].completion_tokens == 2


async def test_requests_admitted_during_a_rebuild_wait_for_it(system: ActorSystem) -> None:
    engine, runner = await start(system, vllm_deployment())
    gate = asyncio.Event()
    original = runner.rebuild

    async def slow_rebuild() -> None:
        await gate.wait()
        await original()

    runner.rebuild = slow_rebuild  # type: ignore[method-assign]
    first = RecordingSink()
    await engine.ask(AddRequest(request("a", max_tokens=60), first))
    await first.first_chunk
    runner.kill()
    await first.done
    waiting = RecordingSink()
    await engine.ask(AddRequest(request("b", max_tokens=3), waiting))
    stats = await engine.ask(GetEngineStats())
    assert stats.waiting == 1
    gate.set()
    await waiting.done
    assert waiting.finished[0].completion_tokens == 3


async def test_a_fourth_death_within_the_window_takes_the_replica_out(
    system: ActorSystem,
) -> None:
    engine, runner = await start(system, vllm_deployment())
    for i in range(4):
        sink = RecordingSink()
        await engine.ask(AddRequest(request(f"p{i}", max_tokens=60), sink))
        await sink.first_chunk
        runner.kill()
        await sink.done
        stats = await until(
            engine,
            lambda s, i=i: (
                s.state is ReplicaState.FAILED
                or (s.context_restarts == i + 1 and s.state is ReplicaState.HEALTHY and i < 3)
            ),
        )
    assert stats.state is ReplicaState.FAILED
    assert stats.context_restarts == 3
    with pytest.raises(ReplicaFailed):
        await engine.ask(AddRequest(request("after"), RecordingSink()))
    assert runner.closed
