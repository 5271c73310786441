"""The ``/v1/embeddings`` handler over real coordinator and engine actors (stub model): the
lease goes back whatever happens, failed replicas are retried, ``queue`` mode waits."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import msgspec
import pytest
from aiohttp import web

from inference_runtime.actors import ActorRef, ActorSystem, Props
from inference_runtime.cluster import DpCoordinatorActor, GetRoutingTable, RegisterReplica
from inference_runtime.errors import Backpressure
from inference_runtime.gateway.embeddings import create_embeddings
from inference_runtime.types import Deployment, ReplicaState
from unit.engine.test_embeddings_engine import StubEmbedder, deployment, start, until


@pytest.fixture
async def system() -> Any:
    system = ActorSystem.create("embeddings-gateway-test")
    yield system
    await system.shutdown()


async def replicas(
    system: ActorSystem, dep: Deployment, *stubs: StubEmbedder
) -> tuple[ActorRef, list[ActorRef]]:
    dp = system.actor_of(Props(DpCoordinatorActor), "dp")
    engines = []
    for i, stub in enumerate(stubs):
        engine = await start(system, stub, dep, f"emb#{i}", coordinator=dp)
        dp.tell(
            RegisterReplica(
                "emb", f"emb#{i}", engine, routing="round_robin", state=ReplicaState.HEALTHY
            )
        )
        engines.append(engine)
    return dp, engines


async def call(dp: ActorRef, dep: Deployment, text: str) -> web.Response:
    body = msgspec.json.encode({"model": "emb", "input": text, "encoding_format": "float"})
    return await create_embeddings(body, catalog={"emb": dep}, coordinator=dp, metrics=None)


async def in_flight(dp: ActorRef) -> list[int]:
    table = await dp.ask(GetRoutingTable())
    return [row.in_flight for row in table.deployments["emb"]]


async def test_a_client_that_goes_away_releases_its_lease(system: ActorSystem) -> None:
    stub = StubEmbedder()
    stub.gate = threading.Event()
    dep = deployment()
    dp, (engine,) = await replicas(system, dep, stub)
    held = asyncio.ensure_future(call(dp, dep, "held"))
    await asyncio.to_thread(stub.entered.wait, 5)
    queued = asyncio.ensure_future(call(dp, dep, "queued"))
    await until(engine, lambda s: s.waiting == 1)
    assert await in_flight(dp) == [2]
    queued.cancel()
    held.cancel()
    await asyncio.gather(queued, held, return_exceptions=True)
    await until(engine, lambda s: s.waiting == 0)  # the queued one was dropped
    assert await in_flight(dp) == [0]
    stub.gate.set()
    await until(engine, lambda s: s.steps == 1)  # the held forward ran; "queued" never did
    response = await call(dp, dep, "after")
    assert response.status == 200
    assert response.headers["X-Replica-Id"] == "emb#0"
    assert stub.forwards == [1, 1]
    assert await in_flight(dp) == [0]


async def test_a_failed_replica_is_retried_on_another(system: ActorSystem) -> None:
    broken, healthy = StubEmbedder(), StubEmbedder()
    broken.fail_always = True
    dep = deployment()
    dp, _ = await replicas(system, dep, broken, healthy)
    for i in range(2):  # each may go to the broken replica first, then is retried
        response = await call(dp, dep, f"text {i}")
        assert response.status == 200
        assert response.headers["X-Replica-Id"] == "emb#1"
    assert len(broken.forwards) >= 1
    assert len(healthy.forwards) == 2
    assert await in_flight(dp) == [0, 0]


async def test_backpressure_rejects_or_queues(system: ActorSystem) -> None:
    stub = StubEmbedder()
    stub.gate = threading.Event()
    dep = deployment(queue_capacity=1, retry_after_s=2)
    dp, (engine,) = await replicas(system, dep, stub)
    held = asyncio.ensure_future(call(dp, dep, "held"))
    await asyncio.to_thread(stub.entered.wait, 5)
    queued = asyncio.ensure_future(call(dp, dep, "queued"))
    await until(engine, lambda s: s.waiting == 1)
    with pytest.raises(Backpressure) as full:
        await call(dp, dep, "rejected")
    assert full.value.retry_after == 2

    waits = deployment(queue_capacity=1, on_capacity_exhausted="queue", queue_timeout_s=10)
    waiting = asyncio.ensure_future(call(dp, waits, "waits for room"))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    stub.gate.set()
    responses = await asyncio.gather(held, queued, waiting)
    assert [r.status for r in responses] == [200, 200, 200]
    assert await in_flight(dp) == [0]
