"""The routing table's rules, without actors: membership, health, exact in-flight counts."""

from __future__ import annotations

import re
from typing import cast

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inference_runtime.actors import ActorRef
from inference_runtime.cluster import RoutingTable
from inference_runtime.errors import NoHealthyReplica
from inference_runtime.types import EngineLoad, ReplicaState

HEALTHY, STARTING = ReplicaState.HEALTHY, ReplicaState.STARTING
DRAINING, FAILED = ReplicaState.DRAINING, ReplicaState.FAILED


def engine() -> ActorRef:
    """The table only stores and compares engine refs; any object stands in for one."""
    return cast(ActorRef, object())


def table_with(*states: ReplicaState, deployment: str = "m") -> RoutingTable:
    table = RoutingTable()
    for i, state in enumerate(states):
        table.register(deployment, f"r{i}", engine(), state=state)
    return table


def in_flight(table: RoutingTable, deployment: str = "m") -> dict[str, int]:
    return {r.replica_id: r.in_flight for r in table.snapshot().deployments[deployment]}


def test_route_counts_in_flight_at_once_and_release_undoes_it() -> None:
    table = table_with(HEALTHY, HEALTHY)
    leases = [table.route("m") for _ in range(5)]
    assert sorted(in_flight(table).values()) == [2, 3]  # least loaded spreads on exact counts
    for lease in leases:
        table.release(lease.deployment, lease.replica_id)
    assert in_flight(table) == {"r0": 0, "r1": 0}
    assert sum(r.routed_total for r in table.snapshot().deployments["m"]) == 5


def test_lease_carries_the_engine() -> None:
    table = RoutingTable()
    ref = engine()
    table.register("m", "r0", ref, state=HEALTHY)
    lease = table.route("m")
    assert (lease.deployment, lease.replica_id, lease.engine) == ("m", "r0", ref)


def test_release_never_goes_below_zero_and_ignores_unknowns() -> None:
    table = table_with(HEALTHY)
    table.route("m")
    for _ in range(3):
        table.release("m", "r0")
    table.release("m", "nope")
    table.release("other", "r0")
    assert in_flight(table) == {"r0": 0}


@given(st.lists(st.booleans(), max_size=60))
def test_in_flight_equals_outstanding_leases(ops: list[bool]) -> None:
    table = table_with(HEALTHY, HEALTHY, HEALTHY)
    outstanding: list[str] = []
    for do_route in ops:
        if do_route:
            outstanding.append(table.route("m").replica_id)
        elif outstanding:
            table.release("m", outstanding.pop(0))
    expected = {rid: outstanding.count(rid) for rid in ("r0", "r1", "r2")}
    assert in_flight(table) == expected


@pytest.mark.parametrize("state", [STARTING, DRAINING, FAILED])
def test_only_healthy_replicas_are_chosen(state: ReplicaState) -> None:
    table = table_with(state, HEALTHY, state)
    assert {table.route("m").replica_id for _ in range(10)} == {"r1"}


def test_exclude_is_honoured() -> None:
    table = table_with(HEALTHY, HEALTHY, HEALTHY)
    for _ in range(10):
        assert table.route("m", exclude=frozenset({"r0", "r2"})).replica_id == "r1"


@pytest.mark.parametrize(
    ("states", "exclude", "message"),
    [
        ((), frozenset(), "deployment 'm' has no replicas"),
        ((FAILED, FAILED), frozenset(), "no healthy replica: all failed (2 replicas)"),
        ((DRAINING,), frozenset(), "no healthy replica: all draining (1 replica)"),
        ((STARTING, STARTING), frozenset(), "all starting (2 replicas)"),
        ((HEALTHY,), frozenset({"r0"}), "all excluded as already tried (1 replica)"),
        ((FAILED, DRAINING, FAILED), frozenset(), "no healthy replica: 2 failed, 1 draining"),
    ],
)
def test_no_healthy_replica_says_why(
    states: tuple[ReplicaState, ...], exclude: frozenset[str], message: str
) -> None:
    table = table_with(*states)
    with pytest.raises(NoHealthyReplica, match=re.escape(message)) as caught:
        table.route("m", exclude=exclude)
    assert caught.value.retry_after == 1.0
    assert caught.value.retryable


def test_no_healthy_replica_names_the_last_failure() -> None:
    table = table_with(HEALTHY)
    table.set_state("m", "r0", FAILED, "CUDA error: device lost")
    with pytest.raises(NoHealthyReplica, match=r"last failure: CUDA error: device lost"):
        table.route("m")


def test_reregistering_keeps_in_flight_and_replaces_the_rest() -> None:
    table = table_with(HEALTHY)
    table.route("m")
    table.route("m")
    new_engine = engine()
    table.register("m", "r0", new_engine, max_concurrent=8, state=DRAINING)
    entry = table.entry("m", "r0")
    assert entry is not None
    assert (entry.in_flight, entry.routed_total) == (2, 2)
    assert (entry.engine, entry.max_concurrent, entry.state) == (new_engine, 8, DRAINING)


def test_deregister_removes_the_replica_and_an_empty_deployment() -> None:
    table = table_with(HEALTHY, HEALTHY)
    assert table.deregister("m", "r0") is not None
    assert table.deregister("m", "r0") is None
    assert [r.replica_id for r in table.snapshot().deployments["m"]] == ["r1"]
    table.deregister("m", "r1")
    assert table.snapshot().deployments == {}
    assert table.policy_name("m") is None


def test_later_registration_with_other_routing_replaces_the_policy() -> None:
    table = table_with(HEALTHY, HEALTHY)
    assert table.policy_name("m") == "least_loaded"
    table.register("m", "r2", engine(), routing="round_robin", state=HEALTHY)
    assert table.policy_name("m") == "round_robin"
    table.route("m")  # r0 busy now; round robin ignores load
    assert [table.route("m").replica_id for _ in range(3)] == ["r1", "r2", "r0"]


def test_unknown_routing_is_refused_without_changing_the_table() -> None:
    table = table_with(HEALTHY)
    with pytest.raises(ValueError, match="unknown routing policy"):
        table.register("m", "r9", engine(), routing="fastest")
    assert table.entry("m", "r9") is None and table.policy_name("m") == "least_loaded"


def test_engine_load_updates_load_and_state() -> None:
    table = table_with(STARTING)
    load = EngineLoad(
        deployment="m", replica_id="r0", state=HEALTHY, waiting=3, running=7, context_restarts=1
    )
    assert table.report(load)
    row = table.snapshot().replica("m", "r0")
    assert row is not None
    assert (row.state, row.waiting, row.running, row.context_restarts) == (HEALTHY, 3, 7, 1)
    assert not table.report(EngineLoad(deployment="m", replica_id="ghost", state=HEALTHY))
    assert not table.report(EngineLoad(deployment="x", replica_id="r0", state=HEALTHY))


def test_engine_failure_report_takes_it_out_and_recovery_brings_it_back() -> None:
    table = table_with(HEALTHY, HEALTHY)
    table.report(EngineLoad(deployment="m", replica_id="r0", state=FAILED, reason="oom"))
    assert {table.route("m").replica_id for _ in range(4)} == {"r1"}
    row = table.snapshot().replica("m", "r0")
    assert row is not None and row.reason == "oom"
    table.report(EngineLoad(deployment="m", replica_id="r0", state=HEALTHY))
    assert "r0" in {table.route("m").replica_id for _ in range(4)}


def test_manager_draining_holds_against_engine_reports() -> None:
    table = table_with(HEALTHY, HEALTHY)
    table.set_state("m", "r0", DRAINING, "scale down")
    table.report(EngineLoad(deployment="m", replica_id="r0", state=HEALTHY, running=2))
    entry = table.entry("m", "r0")
    assert entry is not None and (entry.state, entry.running) == (DRAINING, 2)
    table.report(EngineLoad(deployment="m", replica_id="r0", state=FAILED, reason="boom"))
    assert entry.state is FAILED  # failure gets through a hold...
    table.report(EngineLoad(deployment="m", replica_id="r0", state=HEALTHY))
    assert entry.state is FAILED  # ...but only the manager lifts it
    table.set_state("m", "r0", HEALTHY)
    table.report(EngineLoad(deployment="m", replica_id="r0", state=STARTING))
    assert entry.state is STARTING


def test_set_state_on_unknown_replica_is_ignored() -> None:
    assert not RoutingTable().set_state("m", "r0", HEALTHY)


def test_remove_engine_drops_all_its_replicas() -> None:
    table = RoutingTable()
    shared, other = engine(), engine()
    table.register("a", "r0", shared)
    table.register("b", "r0", shared)
    table.register("b", "r1", other)
    assert sorted(table.remove_engine(shared)) == [("a", "r0"), ("b", "r0")]
    assert not table.uses_engine(shared) and table.uses_engine(other)
    assert list(table.snapshot().deployments) == ["b"]


def test_deployments_are_independent() -> None:
    table = table_with(HEALTHY, deployment="a")
    table.register("b", "r0", engine(), state=HEALTHY)
    table.route("a")
    assert in_flight(table, "a") == {"r0": 1} and in_flight(table, "b") == {"r0": 0}


def test_a_deployment_whose_replicas_are_gone_says_why_the_last_one_failed() -> None:
    table = table_with(STARTING)
    table.set_state("m", "r0", FAILED, "cannot start: runtime_config.api_key_file: a line break")
    table.deregister("m", "r0")  # the engine stopped: it leaves the table
    with pytest.raises(NoHealthyReplica, match="last failure: cannot start: runtime_config"):
        table.route("m")
    table.register("m", "r1", engine(), state=HEALTHY)
    table.deregister("m", "r1")
    with pytest.raises(NoHealthyReplica) as caught:  # a healthy one since: the past is past
        table.route("m")
    assert "last failure" not in str(caught.value)
