"""Route leases: the coordinator's answer is never lost, whether it comes on the call (the
coordinator was idle) or later, after the asker was cancelled."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from inference_runtime.actors import Actor, ActorSystem, Props
from inference_runtime.cluster import (
    DpCoordinatorActor,
    GetRoutingTable,
    RegisterReplica,
    Release,
    Route,
    RouteLease,
)
from inference_runtime.gateway.leases import acquire_lease
from inference_runtime.types import ReplicaState


class SlowCoordinator(Actor):
    """Answers a Route only once ``gate`` is set; records every Release."""

    def __init__(self, gate: asyncio.Event, released: list[Release]) -> None:
        self.gate = gate
        self.released = released

    async def receive(self, message: Any) -> Any:
        if isinstance(message, Route):
            await self.gate.wait()
            return RouteLease("d", "r1", self.context.self_ref)
        if isinstance(message, Release):
            self.released.append(message)
        return None


@pytest.fixture
async def system() -> Any:
    system = ActorSystem.create("leases")
    yield system
    await system.shutdown()


async def test_an_idle_coordinator_answers_on_the_call(system: ActorSystem) -> None:
    coordinator = system.actor_of(Props(DpCoordinatorActor), "dp")
    engine = system.actor_of(Props(lambda: SlowCoordinator(asyncio.Event(), [])))
    await asyncio.sleep(0)
    coordinator.tell(RegisterReplica("d", "r1", engine, state=ReplicaState.HEALTHY))
    await asyncio.sleep(0.01)
    reply = coordinator.ask_future(Route("d"))
    assert reply.done()  # answered on the call: no wake-up, no task
    lease = await acquire_lease(coordinator, Route("d"))
    assert lease.replica_id == "r1" == reply.result().replica_id
    table = await coordinator.ask(GetRoutingTable())
    assert [r.in_flight for r in table.deployments["d"]] == [2]


async def test_cancelled_while_the_answer_is_on_its_way_gives_the_lease_back(
    system: ActorSystem,
) -> None:
    gate, released = asyncio.Event(), list[Release]()
    coordinator = system.actor_of(Props(lambda: SlowCoordinator(gate, released)))
    waiting = asyncio.create_task(acquire_lease(coordinator, Route("d")))
    await asyncio.sleep(0.01)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert released == []
    gate.set()  # the coordinator answers now: counted in flight, nobody to use it
    for _ in range(20):
        await asyncio.sleep(0)
    assert released == [Release("d", "r1")]


async def test_an_answer_that_arrives_in_time_is_returned(system: ActorSystem) -> None:
    gate, released = asyncio.Event(), list[Release]()
    coordinator = system.actor_of(Props(lambda: SlowCoordinator(gate, released)))
    waiting = asyncio.create_task(acquire_lease(coordinator, Route("d")))
    await asyncio.sleep(0.01)
    gate.set()
    lease = await asyncio.wait_for(waiting, 2)
    assert lease.replica_id == "r1" and released == []
