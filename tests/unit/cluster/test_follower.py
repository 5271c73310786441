"""A gateway following the board, without Ray: each replica the head placed gets a proxy,
registered with the coordinator; a new host gets a new proxy under the same id (registered
before the old one stops); a removed replica is deregistered; the catalog reaches the gateway
and the metrics actor. Skipped without Ray (the follower's module imports the Ray backend)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from inference_runtime.actors import Actor, ActorRef, ActorSystem, Props, Terminated
from inference_runtime.cluster import CatalogChanged, DeregisterReplica, RegisterReplica
from inference_runtime.cluster.messages import SharedReplica
from inference_runtime.cluster.sharing import BoardView
from inference_runtime.config import ClusterConfig
from inference_runtime.metrics import ConfigureDeployment, RemoveDeployment
from inference_runtime.types import Deployment

pytest.importorskip("ray")

from inference_runtime.cluster.ray.follower import Follower

SPEC = Deployment.from_dict({"name": "m", "runtime": "fake"}).to_dict()


class Recorder(Actor):
    def __init__(self, log: list[Any]) -> None:
        self.log = log

    def receive(self, message: Any) -> None:
        self.log.append(message)


class Proxy(Actor):
    def receive(self, message: Any) -> None:
        return None


class Host(Actor):
    """Owns the follower, as the sync actor does; watches the proxies to see them stop."""

    def __init__(self, coordinator: ActorRef, metrics: ActorRef, log: list[Any]) -> None:
        self.coordinator, self.metrics, self.log = coordinator, metrics, log

    def pre_start(self) -> None:
        self.follower = Follower(
            self.context,
            coordinator=self.coordinator,
            metrics=self.metrics,
            options=ClusterConfig(backend="ray", role="gateway"),
            proxy=lambda deployment, replica: Props(Proxy),
        )

    def receive(self, message: Any) -> Any:
        match message:
            case BoardView():
                self.follower.follow(message)
                for _, proxy in self.follower.attached.values():
                    self.context.watch(proxy)
            case ("subscribe", ref):
                self.follower.subscribe(ref)
            case Terminated(ref=ref):
                self.log.append(("stopped", ref))
        return None


def view(host: str | None) -> BoardView:
    replicas = {}
    if host is not None:
        replica = SharedReplica("m", "m#0", host, "round_robin", 3, None, None)
        replicas[("m", "m#0")] = replica
    return BoardView({"m": SPEC}, replicas)


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_a_gateway_follows_the_heads_replicas_and_catalog() -> None:
    system = ActorSystem.create("follow")
    coordinator_log: list[Any] = []
    metrics_log: list[Any] = []
    gateway_log: list[Any] = []
    host_log: list[Any] = []
    coordinator = system.actor_of(Props(lambda: Recorder(coordinator_log)), "dp")
    metrics = system.actor_of(Props(lambda: Recorder(metrics_log)), "metrics")
    gateway = system.actor_of(Props(lambda: Recorder(gateway_log)), "gateway")
    host = system.actor_of(Props(lambda: Host(coordinator, metrics, host_log)), "board")
    host.tell(("subscribe", gateway))
    host.tell(view("host-a"))
    host.tell(view("host-a"))  # nothing changed: nothing done
    await settle()
    (first,) = coordinator_log
    assert isinstance(first, RegisterReplica) and first.replica_id == "m#0"
    assert (first.routing, first.max_concurrent) == ("round_robin", 3)
    assert [type(m) for m in metrics_log] == [ConfigureDeployment]
    assert [list(m.deployments) for m in gateway_log] == [[], ["m"]]
    assert all(isinstance(m, CatalogChanged) for m in gateway_log)

    host.tell(view("host-b"))  # re-placed: a new host
    await settle()
    second = coordinator_log[1]
    assert isinstance(second, RegisterReplica) and second.engine != first.engine
    assert host_log == [("stopped", first.engine)]

    host.tell(BoardView({}, {}))  # removed, and its deployment deleted
    await settle()
    assert coordinator_log[2] == DeregisterReplica("m", "m#0")
    assert host_log[1] == ("stopped", second.engine)
    assert isinstance(metrics_log[-1], RemoveDeployment)
    assert list(gateway_log[-1].deployments) == []
    await system.shutdown()
