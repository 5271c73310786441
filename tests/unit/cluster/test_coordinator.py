"""The coordinator actor over a real ActorSystem: asks, load reports, and death watch."""

from __future__ import annotations

from typing import Any

import pytest

from inference_runtime.actors import Actor, ActorRef, ActorSystem, Props
from inference_runtime.cluster import (
    DeregisterReplica,
    DpCoordinatorActor,
    GetRoutingTable,
    RegisterReplica,
    Release,
    Route,
    RouteLease,
    RoutingTable,
    RoutingTableSnapshot,
    SetReplicaState,
)
from inference_runtime.errors import NoHealthyReplica
from inference_runtime.types import EngineLoad, ReplicaState

HEALTHY = ReplicaState.HEALTHY


class FakeEngine(Actor):
    """Stands in for an engine core: the coordinator only holds and watches its ref."""

    def receive(self, message: Any) -> Any:
        return message


async def snapshot(dp: ActorRef) -> RoutingTableSnapshot:
    result = await dp.ask(GetRoutingTable())
    assert isinstance(result, RoutingTableSnapshot)
    return result


async def test_seed_wiring_routes_and_releases() -> None:
    system = ActorSystem.create("coord")
    dp = system.actor_of(Props.create(lambda: DpCoordinatorActor()), "dp")
    engines = [system.actor_of(Props(FakeEngine)) for _ in range(2)]
    for i, ref in enumerate(engines):
        dp.tell(RegisterReplica("m", f"r{i}", ref, state=HEALTHY))
    leases = [await dp.ask(Route("m")) for _ in range(4)]
    assert all(isinstance(lease, RouteLease) for lease in leases)
    assert {lease.replica_id for lease in leases} == {"r0", "r1"}
    assert {lease.engine for lease in leases} == set(engines)
    rows = (await snapshot(dp)).deployments["m"]
    assert [(r.replica_id, r.in_flight, r.routed_total) for r in rows] == [
        ("r0", 2, 2),
        ("r1", 2, 2),
    ]
    for lease in leases:
        dp.tell(Release(lease.deployment, lease.replica_id))
    assert [r.in_flight for r in (await snapshot(dp)).deployments["m"]] == [0, 0]
    await system.shutdown()


async def test_no_healthy_replica_answers_the_ask_and_keeps_the_coordinator() -> None:
    system = ActorSystem.create("coord")
    dp = system.actor_of(Props.create(lambda: DpCoordinatorActor()), "dp")
    engine = system.actor_of(Props(FakeEngine))
    await dp.ask(RegisterReplica("m", "r0", engine))  # STARTING: not routable yet
    with pytest.raises(NoHealthyReplica, match="all starting"):
        await dp.ask(Route("m"))
    with pytest.raises(NoHealthyReplica, match="'other' has no replicas"):
        await dp.ask(Route("other"))
    dp.tell(SetReplicaState("m", "r0", HEALTHY))
    lease = await dp.ask(Route("m", session_key="s1"))
    assert lease.replica_id == "r0"
    stats = dp.statistics()
    assert (stats.failures, stats.restarts) == (0, 0)
    await system.shutdown()


async def test_engine_load_reports_update_the_table() -> None:
    system = ActorSystem.create("coord")
    dp = system.actor_of(Props.create(lambda: DpCoordinatorActor()), "dp")
    engine = system.actor_of(Props(FakeEngine))
    dp.tell(RegisterReplica("m", "r0", engine, max_concurrent=4))
    dp.tell(EngineLoad(deployment="m", replica_id="r0", state=HEALTHY, waiting=2, running=4))
    dp.tell(EngineLoad(deployment="m", replica_id="ghost", state=HEALTHY))
    row = (await snapshot(dp)).replica("m", "r0")
    assert row is not None
    assert (row.state, row.waiting, row.running, row.max_concurrent) == (HEALTHY, 2, 4, 4)
    assert (await dp.ask(Route("m"))).replica_id == "r0"
    await system.shutdown()


async def test_stopping_an_engine_removes_its_replicas() -> None:
    system = ActorSystem.create("coord")
    dp = system.actor_of(Props.create(lambda: DpCoordinatorActor()), "dp")
    doomed, survivor = (system.actor_of(Props(FakeEngine)) for _ in range(2))
    dp.tell(RegisterReplica("a", "r0", doomed, state=HEALTHY))
    dp.tell(RegisterReplica("b", "r0", doomed, state=HEALTHY))
    dp.tell(RegisterReplica("b", "r1", survivor, state=HEALTHY))
    await dp.ask(GetRoutingTable())
    doomed.stop()
    await doomed.wait_stopped()
    # Watchers get Terminated before wait_stopped returns, so it is queued ahead of this ask.
    deployments = (await snapshot(dp)).deployments
    assert "a" not in deployments
    assert [r.replica_id for r in deployments["b"]] == ["r1"]
    assert (await dp.ask(Route("b"))).engine == survivor
    await system.shutdown()


async def test_registering_an_already_stopped_engine_drops_it() -> None:
    system = ActorSystem.create("coord")
    dp = system.actor_of(Props.create(lambda: DpCoordinatorActor()), "dp")
    engine = system.actor_of(Props(FakeEngine))
    engine.stop()
    await engine.wait_stopped()
    dp.tell(RegisterReplica("m", "r0", engine, state=HEALTHY))
    await dp.ask(GetRoutingTable())  # the Terminated is queued right after the registration
    assert (await snapshot(dp)).deployments == {}
    await system.shutdown()


async def test_replaced_engine_stopping_leaves_the_new_registration() -> None:
    system = ActorSystem.create("coord")
    dp = system.actor_of(Props.create(lambda: DpCoordinatorActor()), "dp")
    old, new = (system.actor_of(Props(FakeEngine)) for _ in range(2))
    dp.tell(RegisterReplica("m", "r0", old, state=HEALTHY))
    dp.tell(RegisterReplica("m", "r0", new, state=HEALTHY))  # re-placed on another engine
    await dp.ask(GetRoutingTable())
    old.stop()
    await old.wait_stopped()
    assert (await dp.ask(Route("m"))).engine == new
    await system.shutdown()


async def test_deregister_and_unknown_messages() -> None:
    system = ActorSystem.create("coord")
    dp = system.actor_of(Props.create(lambda: DpCoordinatorActor()), "dp")
    engine = system.actor_of(Props(FakeEngine))
    dp.tell(RegisterReplica("m", "r0", engine, state=HEALTHY))
    dp.tell(DeregisterReplica("m", "r0"))
    dp.tell(DeregisterReplica("m", "never"))
    assert await dp.ask("what?") is None  # logged and dead-lettered, no restart
    assert system.dead_letters.count == 1
    assert (await snapshot(dp)).deployments == {}
    assert dp.statistics().restarts == 0
    await system.shutdown()


class FlakyTable(RoutingTable):
    """Fails one release: a bug in the table must restart the coordinator, not kill it."""

    failed = False

    def release(self, deployment: str, replica_id: str) -> None:
        if not self.failed:
            self.failed = True
            raise RuntimeError("bug")
        super().release(deployment, replica_id)


async def test_a_shared_table_survives_a_restart() -> None:
    system = ActorSystem.create("coord")
    table = FlakyTable()
    dp = system.actor_of(Props.create(lambda: DpCoordinatorActor(table)), "dp")
    engine = system.actor_of(Props(FakeEngine))
    dp.tell(RegisterReplica("m", "r0", engine, state=HEALTHY))
    await dp.ask(Route("m"))
    await dp.ask(Route("m"))
    dp.tell(Release("m", "r0"))  # fails: the coordinator restarts with the same table
    dp.tell(Route("m", exclude=frozenset({"r0"})))  # NoHealthyReplica from a tell: only logged
    row = (await snapshot(dp)).replica("m", "r0")
    assert row is not None and row.in_flight == 2
    assert dp.statistics().restarts == 1
    engine.stop()  # the watch belongs to the actor and survived the restart
    await engine.wait_stopped()
    assert (await snapshot(dp)).deployments == {}
    await system.shutdown()


def test_register_message_validates_routing_and_capacity() -> None:
    with pytest.raises(ValueError, match="routing"):
        RegisterReplica("m", "r0", None, routing="fastest")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_concurrent"):
        RegisterReplica("m", "r0", None, max_concurrent=0)  # type: ignore[arg-type]
