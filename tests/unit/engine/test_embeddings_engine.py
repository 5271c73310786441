"""EmbeddingEngineActor over a stub model: batching across callers, limits, backpressure,
supervision, load reports."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from inference_runtime.actors import Actor, ActorRef, ActorSystem, Props
from inference_runtime.engine import AddRequest, EngineStatistics, GetEngineStats
from inference_runtime.engine.embedding_core import (
    CancelEmbed,
    Embed,
    EmbedAdmitted,
    EmbeddingEngineActor,
)
from inference_runtime.engine.runner import RunnerInfo
from inference_runtime.errors import (
    Backpressure,
    ContextPoisoned,
    ReplicaFailed,
    RequestError,
    UnsupportedParameter,
)
from inference_runtime.types import Deployment, EngineLoad, EngineRequest, ReplicaState

os.environ["HF_HUB_OFFLINE"] = "1"
DIM = 8


class StubEmbedder:
    """An EmbeddingModel in numpy: vector i is one-hot-ish on the input's length; records every
    forward, can hold the next one on a gate, and can fail it."""

    def __init__(self, *, max_batch_size: int = 64) -> None:
        self.max_batch_size = max_batch_size
        self.loaded = False
        self.forwards: list[int] = []
        self.gate: threading.Event | None = None
        self.entered = threading.Event()
        self.fail_next: BaseException | None = None
        self.fail_always = False
        self.rebuilds = 0

    @property
    def info(self) -> RunnerInfo:
        return RunnerInfo(
            runtime="embeddings", transport="local", max_context=16, capabilities=frozenset()
        )

    @property
    def dimension(self) -> int:
        return DIM

    async def load(self) -> None:
        self.loaded = True

    async def rebuild(self) -> None:
        self.rebuilds += 1

    async def close(self) -> None:
        pass

    def tokenize(self, inputs: Sequence[str | Sequence[int]]) -> list[list[int]]:
        ids = [[len(x)] * len(x.split()) if isinstance(x, str) else list(x) for x in inputs]
        if any(len(row) > 16 for row in ids):
            raise RequestError("too long", param="input")
        return ids

    def check_dimensions(self, dimensions: int | None) -> None:
        if dimensions is not None and not 1 <= dimensions <= DIM:
            raise UnsupportedParameter("dimensions", "no")

    def embed(self, inputs: Sequence[Any], *, dimensions: int | None = None) -> Any:
        self.entered.set()
        if self.gate is not None:
            assert self.gate.wait(10)
        self.forwards.append(len(inputs))
        if self.fail_always:
            raise ContextPoisoned("always")
        if self.fail_next is not None:
            error, self.fail_next = self.fail_next, None
            raise error
        vectors = np.zeros((len(inputs), DIM), dtype=np.float32)
        for i, row in enumerate(inputs):
            vectors[i, len(row) % DIM] = 1.0
            vectors[i, (len(row) + 1) % DIM] = 0.5
        return vectors, [len(row) for row in inputs]

    def truncate(self, vectors: Any, dimensions: int | None) -> Any:
        return vectors if dimensions is None else vectors[:, :dimensions]


class Loads(Actor):
    def __init__(self, loads: list[tuple[EngineLoad, ActorRef | None]]) -> None:
        self.loads = loads

    def receive(self, message: Any) -> None:
        if isinstance(message, EngineLoad):
            self.loads.append((message, self.context.sender))


def deployment(**serving: Any) -> Deployment:
    return Deployment.from_dict(
        {"name": "emb", "runtime": "embeddings", "model": "unused", "serving": serving}
    )


@pytest.fixture
async def system() -> Any:
    system = ActorSystem.create("embeddings-test")
    yield system
    await system.shutdown()


async def start(
    system: ActorSystem,
    stub: StubEmbedder,
    dep: Deployment | None = None,
    replica_id: str = "emb#0",
    **kwargs: Any,
) -> ActorRef:
    dep = dep or deployment()
    coordinator = kwargs.pop("coordinator", None)
    engine = system.actor_of(
        Props(
            lambda: EmbeddingEngineActor(
                dep, replica_id, coordinator=coordinator, runner_factory=lambda: stub, **kwargs
            )
        ),
        replica_id.replace("#", "-"),
    )
    await until(engine, lambda s: s.state is ReplicaState.HEALTHY)
    return engine


async def until(engine: ActorRef, check: Any) -> EngineStatistics:
    for _ in range(500):
        stats: EngineStatistics = await engine.ask(GetEngineStats())
        if check(stats):
            return stats
        await asyncio.sleep(0.002)
    raise AssertionError(f"never reached: {stats}")


def embed(rid: str, *inputs: str, dimensions: int | None = None) -> Embed:
    return Embed(rid, tuple(inputs), dimensions)


async def test_requests_from_many_callers_share_one_forward(system: ActorSystem) -> None:
    stub = StubEmbedder()
    stub.gate = threading.Event()
    engine = await start(system, stub)
    first: EmbedAdmitted = await engine.ask(embed("first", "hold the line"))
    await asyncio.to_thread(stub.entered.wait, 5)  # the first forward is running and held
    admitted = await asyncio.gather(
        *(engine.ask(embed(f"r{i}", "a b", "c d e", dimensions=4)) for i in range(10))
    )
    stats = await engine.ask(GetEngineStats())
    assert (stats.running, stats.waiting) == (1, 20)
    stub.gate.set()
    results = await asyncio.gather(first.result, *(a.result for a in admitted))
    assert stub.forwards == [1, 20]  # ten callers, one forward
    assert all(len(r.vectors) == 2 and r.dimension == 4 for r in results[1:])
    assert results[0].dimension == DIM
    assert results[1].prompt_tokens == admitted[0].prompt_tokens == 5
    vector = np.frombuffer(results[1].vectors[1], dtype="<f4")
    assert vector.tolist() == [0, 0, 0, 1.0, 0.5, 0, 0, 0][:4]
    assert (await engine.ask(GetEngineStats())).steps == 2


async def test_batches_keep_each_request_together(system: ActorSystem) -> None:
    stub = StubEmbedder(max_batch_size=4)
    stub.gate = threading.Event()
    engine = await start(system, stub)
    held = await engine.ask(embed("held", "x"))
    await asyncio.to_thread(stub.entered.wait, 5)
    sizes = [3, 2, 2, 6, 1]
    admitted = [await engine.ask(embed(f"r{n}", *["w"] * n)) for n in sizes]
    stub.gate.set()
    await asyncio.gather(held.result, *(a.result for a in admitted))
    # [3] cannot take the 2 after it; [2, 2]; a request over the limit runs alone; then [1]
    assert stub.forwards == [1, 3, 4, 6, 1]


async def test_backpressure_counts_queued_inputs(system: ActorSystem) -> None:
    stub = StubEmbedder()
    stub.gate = threading.Event()
    dep = deployment(queue_capacity=4, retry_after_s=3)
    engine = await start(system, stub, dep)
    running = await engine.ask(embed("running", *["x"] * 10))  # an idle queue takes any size
    await asyncio.to_thread(stub.entered.wait, 5)
    queued = await engine.ask(embed("queued", "a", "b", "c"))
    with pytest.raises(Backpressure) as full:
        await engine.ask(embed("over", "a", "b"))
    assert full.value.retry_after == 3
    engine.tell(CancelEmbed("queued"))  # a caller that went away frees its room at once
    assert (await engine.ask(GetEngineStats())).waiting == 0
    assert queued.result.cancelled()
    again = await engine.ask(embed("again", "a", "b", "c", "d"))
    stub.gate.set()
    await asyncio.gather(running.result, again.result)
    assert stub.forwards == [10, 4]


async def test_admission_refusals(system: ActorSystem) -> None:
    engine = await start(system, StubEmbedder())
    with pytest.raises(RequestError) as long:
        await engine.ask(embed("long", "w " * 17))
    assert long.value.param == "input"
    with pytest.raises(UnsupportedParameter) as dims:
        await engine.ask(embed("dims", "hi", dimensions=99))
    assert dims.value.param == "dimensions"
    with pytest.raises(RequestError) as empty:
        await engine.ask(Embed("empty", ()))
    assert empty.value.param == "input"
    chat = (EngineRequest(request_id="c", deployment="emb", prompt="hi"),)
    with pytest.raises(RequestError) as wrong:
        await engine.ask(AddRequest(chat, sink=None))  # type: ignore[arg-type]
    assert wrong.value.param == "model"
    assert "does not support chat/completions" in str(wrong.value)
    ok = await engine.ask(embed("ok", "still serving"))
    assert len((await ok.result).vectors) == 1


async def test_poisoned_context_fails_the_batch_retryably_and_restarts(
    system: ActorSystem,
) -> None:
    stub = StubEmbedder()
    stub.fail_next = ContextPoisoned("device lost")
    engine = await start(system, stub)
    failed = await engine.ask(embed("a", "boom"))
    with pytest.raises(ReplicaFailed) as error:
        await failed.result
    assert error.value.retryable
    stats = await until(engine, lambda s: s.context_restarts == 1)
    assert stats.state is ReplicaState.HEALTHY
    assert stub.rebuilds == 1
    ok = await engine.ask(embed("b", "fine now"))
    assert len((await ok.result).vectors) == 1


async def test_context_beyond_its_restart_window_fails_the_replica(system: ActorSystem) -> None:
    stub = StubEmbedder()
    engine = await start(system, stub, context_restart_window=(0, 60.0))
    stub.fail_next = ContextPoisoned("device lost")
    first = await engine.ask(embed("a", "boom"))
    with pytest.raises(ReplicaFailed):
        await first.result
    stats = await until(engine, lambda s: s.state is ReplicaState.FAILED)
    assert "restart window" in (stats.reason or "")
    with pytest.raises(ReplicaFailed):
        await engine.ask(embed("b", "too late"))


async def test_reports_load_to_the_coordinator(system: ActorSystem) -> None:
    loads: list[tuple[EngineLoad, ActorRef | None]] = []
    coordinator = system.actor_of(Props(lambda: Loads(loads), mailbox_capacity=None))
    engine = await start(system, StubEmbedder(), coordinator=coordinator)
    admitted = await engine.ask(embed("a", "one", "two"))
    await admitted.result
    await until(engine, lambda s: loads and loads[-1][0].waiting == 0)
    states = [load.state for load, _ in loads]
    assert states[0] is ReplicaState.STARTING
    assert ReplicaState.HEALTHY in states
    assert all(sender == engine for _, sender in loads)
    assert any(load.waiting == 2 or load.running == 2 for load, _ in loads)


class ThreadRecordingEmbedder(StubEmbedder):
    """Records the thread each tokenize ran in."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[str] = []

    def tokenize(self, inputs: Sequence[str | Sequence[int]]) -> list[list[int]]:
        self.threads.append(threading.current_thread().name)
        return [[1] for _ in inputs]


async def test_big_inputs_are_tokenized_in_a_worker_thread(system: ActorSystem) -> None:
    from inference_runtime.engine.admission import OFF_LOOP_CHARS

    stub = ThreadRecordingEmbedder()
    engine = await start(system, stub)
    main = threading.current_thread().name
    small = await engine.ask(Embed("small", ("a few words",)))
    big = await engine.ask(Embed("big", ("x" * (OFF_LOOP_CHARS + 1),)))
    for admitted in (small, big):
        assert len((await asyncio.wait_for(admitted.result, 10)).vectors) == 1
    assert stub.threads[0] == main and stub.threads[1] != main
