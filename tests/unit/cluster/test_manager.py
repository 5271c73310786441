"""DeploymentManagerActor: replicas from the catalog, updates, deletes, subscribers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from inference_runtime.actors import Actor, ActorSystem, Props
from inference_runtime.cluster import (
    ApplyDeployment,
    CatalogChanged,
    DeleteDeployment,
    DeploymentManagerActor,
    DpCoordinatorActor,
    GetRoutingTable,
    ListDeployments,
    WatchCatalog,
)
from inference_runtime.errors import NotFound, RequestError
from inference_runtime.types import Deployment, ReplicaState


class Subscriber(Actor):
    def __init__(self, seen: list[Any]) -> None:
        self.seen = seen

    def receive(self, message: Any) -> None:
        if isinstance(message, CatalogChanged):
            self.seen.append(dict(message.deployments))


@pytest.fixture
async def system() -> Any:
    system = ActorSystem.create("mgr-test")
    yield system
    await system.shutdown()


async def healthy(dp: Any, name: str) -> int:
    for _ in range(200):
        rows = (await dp.ask(GetRoutingTable())).deployments.get(name, ())
        count = sum(r.state is ReplicaState.HEALTHY for r in rows)
        if count and count == len(rows):
            return count
        await asyncio.sleep(0.005)
    return 0


async def test_apply_update_delete(system: ActorSystem) -> None:
    dp = system.actor_of(Props(DpCoordinatorActor), "dp")
    mgr = system.actor_of(Props(DeploymentManagerActor), "mgr")
    seen: list[Any] = []
    sub = system.actor_of(Props(lambda: Subscriber(seen)))
    mgr.tell(WatchCatalog(sub))
    dep = Deployment(name="org/model:v1", runtime="fake", replicas=2)
    assert await mgr.ask(ApplyDeployment(dep)) == ("org/model:v1#0", "org/model:v1#1")
    assert await healthy(dp, "org/model:v1") == 2
    assert await mgr.ask(ApplyDeployment(dep)) == ("org/model:v1#0", "org/model:v1#1")  # no-op
    bigger = Deployment(name="org/model:v1", runtime="fake", replicas=3)
    await mgr.ask(ApplyDeployment(bigger))
    assert await healthy(dp, "org/model:v1") == 3
    assert await mgr.ask(ListDeployments()) == (bigger,)
    await mgr.ask(DeleteDeployment("org/model:v1"))
    assert "org/model:v1" not in (await dp.ask(GetRoutingTable())).deployments
    with pytest.raises(NotFound):
        await mgr.ask(DeleteDeployment("org/model:v1"))
    await mgr.ask(ListDeployments())
    assert [list(c) for c in seen] == [[], ["org/model:v1"], ["org/model:v1"], []]


async def test_refuses_what_it_cannot_do(system: ActorSystem) -> None:
    system.actor_of(Props(DpCoordinatorActor), "dp")
    mgr = system.actor_of(Props(DeploymentManagerActor), "mgr")
    with pytest.raises(RequestError, match="gpus"):
        await mgr.ask(ApplyDeployment(Deployment(name="x", runtime="fake", gpus=1)))
    assert await mgr.ask(ListDeployments()) == ()


async def test_needs_a_coordinator(system: ActorSystem) -> None:
    mgr = system.actor_of(Props(DeploymentManagerActor), "mgr")
    await mgr.wait_stopped()  # cannot start without /user/dp
