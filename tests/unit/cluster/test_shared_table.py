"""Several gateways without Ray or actors: a shared table routes on its own exact count plus the
others' published counts, publishes only its own, holds the head's states, and (on the head)
keeps a drain open until every gateway has applied it; ``RouteSharing`` carries all of it over
an in-memory board."""

from __future__ import annotations

from typing import Any, cast

from inference_runtime.actors import Actor, ActorRef, ActorSystem, Props
from inference_runtime.cluster import DpCoordinatorActor, GetRoutingTable, RegisterReplica
from inference_runtime.cluster.board import BoardState
from inference_runtime.cluster.messages import ApplyRoutes, ExportRoutes, ReplicaHost
from inference_runtime.cluster.shared_table import SharedRoutingTable
from inference_runtime.cluster.sharing import RouteSharing
from inference_runtime.types import EngineLoad, ReplicaState

HEALTHY, DRAINING = ReplicaState.HEALTHY, ReplicaState.DRAINING
R0, R1 = ("m", "m#0"), ("m", "m#1")


def engine() -> ActorRef:
    return cast(ActorRef, object())


def shared(*, barrier: bool = False, hosts: bool = False) -> SharedRoutingTable:
    table = SharedRoutingTable(drain_barrier=barrier)
    for _, rid in (R0, R1):
        table.register("m", rid, engine(), max_concurrent=2, state=HEALTHY)
        if hosts:
            table.set_host("m", rid, f"host-{rid}")
    return table


def in_flight(table: SharedRoutingTable) -> dict[str, int]:
    return {r.replica_id: r.in_flight for r in table.snapshot().deployments["m"]}


def test_routing_sees_the_others_counts_and_only_the_own_count_is_published() -> None:
    table = shared()
    table.apply(ApplyRoutes(others={R0: 2}))
    assert in_flight(table) == {"m#0": 2, "m#1": 0}
    assert table.entry(*R0).overloaded  # type: ignore[union-attr]
    leases = [table.route("m") for _ in range(2)]
    assert [lease.replica_id for lease in leases] == ["m#1", "m#1"]  # least loaded avoids m#0
    assert table.export().counts == {R1: 2}
    table.release("m", "m#0")  # not ours: the others' count stays
    assert in_flight(table)["m#0"] == 2
    table.apply(ApplyRoutes(others={}))  # the other gateway released them
    assert in_flight(table) == {"m#0": 0, "m#1": 2}
    for lease in leases:
        table.release("m", lease.replica_id)
    assert in_flight(table) == {"m#0": 0, "m#1": 0} and table.export().counts == {}


def test_a_replica_registered_again_keeps_the_others_count() -> None:
    table = shared(hosts=True)
    table.apply(ApplyRoutes(others={R0: 1}))
    table.route("m", exclude=frozenset({"m#1"}))
    table.register("m", "m#0", engine(), state=HEALTHY)  # re-placed: a new engine
    assert in_flight(table)["m#0"] == 2 and table.export().counts == {R0: 1}
    assert [r.replica_id for r in table.export().replicas] == ["m#1"]  # its host: not yet told


def test_the_head_publishes_membership_with_the_states_it_holds() -> None:
    table = shared(hosts=True, barrier=True)
    table.set_state("m", "m#1", DRAINING, "scaled down")
    replicas = {r.replica_id: r for r in table.export().replicas}
    assert replicas["m#0"].held is None and replicas["m#0"].host == "host-m#0"
    assert replicas["m#1"].held is DRAINING and replicas["m#1"].reason == "scaled down"
    assert replicas["m#1"].routing == "least_loaded" and replicas["m#1"].max_concurrent == 2


def test_a_drain_on_the_head_counts_one_more_until_every_gateway_saw_it() -> None:
    table = shared(barrier=True)
    table.set_state("m", "m#0", DRAINING)
    assert in_flight(table)["m#0"] == 1  # a gateway may still route there
    assert table.export().counts == {}  # but it is not ours to publish
    table.apply(ApplyRoutes(others={R0: 1}))
    assert in_flight(table)["m#0"] == 2
    table.apply(ApplyRoutes(others={R0: 1}, acked=frozenset({R0})))
    assert in_flight(table)["m#0"] == 1
    table.apply(ApplyRoutes(others={}))
    assert in_flight(table)["m#0"] == 0
    gateway = shared()
    gateway.set_state("m", "m#0", DRAINING)
    assert in_flight(gateway)["m#0"] == 0  # only the head waits for the others


def test_a_gateway_holds_the_heads_states_against_engine_reports() -> None:
    table = shared()
    table.apply(ApplyRoutes(others={}, held={R0: (DRAINING, "scaled down")}))
    table.report(EngineLoad(deployment="m", replica_id="m#0", state=HEALTHY))
    assert table.entry(*R0).state is DRAINING  # type: ignore[union-attr]
    assert [table.route("m").replica_id for _ in range(2)] == ["m#1", "m#1"]


class Runtime:
    """A table and its sharing, synced with an in-memory board as the sync actor does."""

    def __init__(self, board: BoardState, writer: str, *, head: bool) -> None:
        self.board = board
        self.table = shared(barrier=head, hosts=head)
        self.sharing = RouteSharing(writer, head=head)

    def sync(self) -> None:
        sent = self.sharing.outgoing(self.table.export())
        reply = self.board.sync(self.sharing.writer, sent, self.sharing.client.since, 5.0)
        apply = self.sharing.incoming(sent, reply)
        if apply is not None:
            self.table.apply(apply)


def test_counts_and_drains_cross_the_board_between_a_head_and_a_gateway() -> None:
    board = BoardState()
    head, gateway = Runtime(board, "head", head=True), Runtime(board, "gw", head=False)
    for runtime in (head, gateway, head, gateway, head):
        runtime.sync()
    view = gateway.sharing.view()
    assert {k: r.host for k, r in view.replicas.items()} == {R0: "host-m#0", R1: "host-m#1"}

    gateway.table.route("m")
    gateway.table.route("m")  # one on each replica
    gateway.sync()
    head.sync()
    assert in_flight(head.table) == {"m#0": 1, "m#1": 1}
    assert head.table.export().counts == {}

    head.table.set_state("m", "m#0", DRAINING)
    head.sync()  # published, but the gateway has not applied it yet
    assert in_flight(head.table)["m#0"] == 2
    gateway.sync()  # applies the drain
    assert gateway.table.entry(*R0).state is DRAINING  # type: ignore[union-attr]
    head.sync()
    assert in_flight(head.table)["m#0"] == 2  # the gateway has not said so yet
    gateway.sync()  # says it has applied the drain
    head.sync()
    assert in_flight(head.table)["m#0"] == 1  # only its request left
    gateway.table.release("m", "m#0")
    gateway.sync()
    head.sync()
    assert in_flight(head.table)["m#0"] == 0  # drained


class FakeEngine(Actor):
    def receive(self, message: Any) -> Any:
        return message


async def test_the_coordinator_shares_only_a_shared_table_and_hosts_only_from_the_engine() -> None:
    system = ActorSystem.create("share")
    plain = system.actor_of(Props.create(lambda: DpCoordinatorActor()), "plain")
    table = SharedRoutingTable(drain_barrier=True)
    dp = system.actor_of(Props.create(lambda: DpCoordinatorActor(table)), "dp")
    engine_ref, stranger = (system.actor_of(Props(FakeEngine)) for _ in range(2))
    for coordinator in (plain, dp):
        coordinator.tell(RegisterReplica("m", "m#0", engine_ref, state=HEALTHY))
        coordinator.tell(ReplicaHost("m", "m#0", "late-host"), sender=stranger)
        coordinator.tell(ReplicaHost("m", "m#0", "host"), sender=engine_ref)
        coordinator.tell(ApplyRoutes(others={R0: 2}))
    assert await plain.ask(ExportRoutes()) is None
    assert (await plain.ask(GetRoutingTable())).replica("m", "m#0").in_flight == 0
    export = await dp.ask(ExportRoutes())
    assert [r.host for r in export.replicas] == ["host"] and export.counts == {}
    assert (await dp.ask(GetRoutingTable())).replica("m", "m#0").in_flight == 2
    await system.shutdown()
