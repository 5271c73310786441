"""Admission's checks: a value no sampler takes is the request's own 400, whatever way it came
in (the gateway checks the same ranges), before any work is done on the replica."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from inference_runtime.actors import Actor, ActorSystem, Props
from inference_runtime.engine import (
    AbortRequest,
    AddRequest,
    EngineCoreActor,
    GetEngineStats,
    create_runner,
)
from inference_runtime.engine.admission import OFF_LOOP_CHARS, check_sampling
from inference_runtime.errors import ReplicaFailed, RequestError, UnsupportedParameter
from inference_runtime.testing import RecordingSink
from inference_runtime.types import Deployment, EngineRequest, ReplicaState, SamplingParams

ALL = frozenset({"temperature", "top_p", "top_k", "seed", "presence_penalty",
                 "frequency_penalty", "logprobs", "top_logprobs"})  # fmt: skip


@pytest.mark.parametrize(
    ("field", "value"),
    [("seed", 2**70), ("seed", -(2**63) - 1), ("temperature", 3.0), ("top_k", 2**40),
     ("top_logprobs", 50), ("max_tokens", 0), ("presence_penalty", -9.0)],
)  # fmt: skip
def test_a_value_no_sampler_takes_is_a_request_error(field: str, value: float) -> None:
    sampling = SamplingParams(**{field: value})  # type: ignore[arg-type]
    with pytest.raises(RequestError) as caught:
        check_sampling(sampling, capabilities=ALL, runtime="transformers")
    assert caught.value.param == field
    assert not caught.value.retryable  # answered, never retried onto another replica


def test_int64_seeds_are_taken_and_capabilities_still_hold() -> None:
    for seed in (2**63 - 1, -(2**63), 0):
        check_sampling(SamplingParams(seed=seed), capabilities=ALL, runtime="transformers")
    with pytest.raises(UnsupportedParameter):
        check_sampling(SamplingParams(seed=1), capabilities=frozenset(), runtime="fake")


# -- a big prompt is encoded off the loop -------------------------------------------------


async def _engine(system: Any, threads: list[str], gate: threading.Event | None = None) -> Any:
    """An engine core over a FakeRunner whose ``encode`` records the thread it ran in (and,
    given a gate, waits for it: an abort can then arrive mid-encoding)."""
    dep = Deployment.from_dict({"name": "fake", "runtime": "fake",
                                "runtime_config": {"max_context": 10**6}})  # fmt: skip

    def factory() -> Any:
        runner = create_runner(dep)
        encode = runner.encode

        def recording(request: EngineRequest) -> tuple[list[int], str]:
            threads.append(threading.current_thread().name)
            if gate is not None:
                assert gate.wait(30)
            return encode(request)

        runner.encode = recording  # type: ignore[method-assign]
        return runner

    coord = system.actor_of(Props(_Sink, mailbox_capacity=None))
    engine = system.actor_of(
        Props(lambda: EngineCoreActor(dep, "r0", coordinator=coord, runner_factory=factory))
    )
    for _ in range(200):
        if (await engine.ask(GetEngineStats())).state is ReplicaState.HEALTHY:
            return engine
        await asyncio.sleep(0.005)
    raise AssertionError("the engine never became healthy")


class _Sink(Actor):
    def receive(self, message: Any) -> None:
        return None


def _request(rid: str, prompt: str) -> tuple[EngineRequest, ...]:
    return (EngineRequest(request_id=rid, deployment="fake", prompt=prompt),)


@pytest.fixture
async def system() -> Any:
    system = ActorSystem.create("admission-test")
    yield system
    await system.shutdown()


async def test_a_big_prompt_is_encoded_in_a_worker_thread_a_small_one_inline(system: Any) -> None:
    threads: list[str] = []
    engine = await _engine(system, threads)
    main = threading.current_thread().name
    big = "word " * (OFF_LOOP_CHARS // 5 + 1)
    for rid, prompt in (("small", "hello world"), ("big", big)):
        sink = RecordingSink()
        admitted = await engine.ask(AddRequest(_request(rid, prompt), sink))
        assert admitted.prompt_tokens == len(prompt.split())
        await asyncio.wait_for(sink.done, 30)
    assert threads[0] == main
    assert threads[1] != main


async def test_an_abort_while_encoding_is_not_queued_and_the_loop_serves_on(system: Any) -> None:
    threads: list[str] = []
    gate = threading.Event()
    engine = await _engine(system, threads, gate)
    asking = asyncio.ensure_future(
        engine.ask(AddRequest(_request("big", "word " * OFF_LOOP_CHARS), RecordingSink()))
    )
    for _ in range(1000):  # the encoding has started in its thread
        if threads:
            break
        await asyncio.sleep(0.005)
    stats = await engine.ask(GetEngineStats())  # the actor answers while it encodes
    assert stats.state is ReplicaState.HEALTHY
    engine.tell(AbortRequest("big"))
    await engine.ask(GetEngineStats())
    gate.set()
    with pytest.raises(ReplicaFailed):
        await asyncio.wait_for(asking, 30)
    assert (await engine.ask(GetEngineStats())).waiting == 0


# -- a prompt that cannot fit is refused on its size, never tokenized -----------------------


class _CountingRunner:
    """A runner whose tokens are at most 4 characters; counts its encodings."""

    def __init__(self) -> None:
        from inference_runtime.engine.runner import RunnerInfo

        self.info = RunnerInfo(
            runtime="t", transport="local", max_context=100, capabilities=ALL, max_token_chars=4
        )
        self.encoded = 0

    def encode(self, request: EngineRequest) -> tuple[list[int], str]:
        self.encoded += 1
        text = request.prompt or ""
        return [1] * -(-len(text) // 4), text


@pytest.mark.parametrize("off_loop", [False, True])
async def test_a_prompt_over_what_any_tokens_could_fit_is_refused_unencoded(
    off_loop: bool,
) -> None:
    from inference_runtime.engine.admission import build_sequences, encode_off_loop
    from inference_runtime.errors import ContextLengthExceeded

    runner: Any = _CountingRunner()
    big = _prompt("x" * 401)

    async def admit() -> Any:
        if off_loop:
            return await encode_off_loop(runner, [big])
        return build_sequences(runner, [big], RecordingSink(), arrival=0.0)

    with pytest.raises(ContextLengthExceeded, match="at least 102 tokens"):
        await admit()
    assert runner.encoded == 0
    assert build_sequences(runner, [_prompt("x" * 396)], RecordingSink(), arrival=0.0)
    assert runner.encoded == 1


def _prompt(text: str) -> EngineRequest:
    return EngineRequest(
        request_id="r", deployment="t", prompt=text, sampling=SamplingParams(max_tokens=1)
    )
