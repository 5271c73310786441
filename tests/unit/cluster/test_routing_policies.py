"""The load-based and rotating policies, and the policy factory."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any, cast

import pytest

from inference_runtime.actors import ActorRef
from inference_runtime.cluster.routing import (
    POLICIES,
    LeastLoaded,
    PowerOfTwo,
    ReplicaEntry,
    RoundRobin,
    SessionAffinity,
    make_policy,
)
from inference_runtime.types import ReplicaState
from inference_runtime.types.deployment import ROUTING_POLICIES


def entry(replica_id: str, **fields: Any) -> ReplicaEntry:
    """A healthy entry; policies only store the engine ref, so any object stands in for it."""
    fields.setdefault("state", ReplicaState.HEALTHY)
    return ReplicaEntry(replica_id, cast(ActorRef, object()), **fields)


def test_factory_knows_exactly_the_deployment_policy_names() -> None:
    assert tuple(POLICIES) == ROUTING_POLICIES
    assert isinstance(make_policy("least_loaded"), LeastLoaded)
    assert isinstance(make_policy("power_of_two"), PowerOfTwo)
    assert isinstance(make_policy("round_robin"), RoundRobin)
    assert isinstance(make_policy("session_affinity"), SessionAffinity)
    assert make_policy("round_robin") is not make_policy("round_robin")  # per deployment state


def test_factory_rejects_unknown_names_listing_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown routing policy 'random'.*least_loaded"):
        make_policy("random")


# -- least loaded ------------------------------------------------------------------------------


def test_least_loaded_takes_minimum_in_flight() -> None:
    entries = [entry("a", in_flight=3), entry("b", in_flight=1), entry("c")]
    entries[2].in_flight = 2
    assert LeastLoaded().choose(entries, key=None).replica_id == "b"


def test_least_loaded_breaks_ties_by_fewer_waiting() -> None:
    entries = [
        entry("a", in_flight=1, waiting=5),
        entry("b", in_flight=1, waiting=2),
        entry("c", in_flight=4, waiting=0),
    ]
    policy = LeastLoaded()
    assert [policy.choose(entries, key=None).replica_id for _ in range(3)] == ["b"] * 3


def test_least_loaded_rotates_among_full_ties() -> None:
    entries = [entry(rid) for rid in ("a", "b", "c")]
    policy = LeastLoaded()
    picks = [policy.choose(entries, key=None).replica_id for _ in range(9)]
    assert picks == ["a", "b", "c"] * 3


def test_least_loaded_spreads_a_burst_as_counts_grow() -> None:
    entries = [entry(rid) for rid in ("a", "b", "c", "d")]
    policy = LeastLoaded()
    for _ in range(40):
        policy.choose(entries, key=None).in_flight += 1
    assert [e.in_flight for e in entries] == [10, 10, 10, 10]


# -- power of two ------------------------------------------------------------------------------


def test_power_of_two_takes_the_less_loaded_of_its_two_draws() -> None:
    entries = [entry(rid, in_flight=n) for rid, n in (("a", 0), ("b", 5), ("c", 9))]
    policy = PowerOfTwo(random.Random(7))
    counts = Counter(policy.choose(entries, key=None).replica_id for _ in range(300))
    # "c" is never the lower of two draws; "a" wins whenever drawn (2 of the 3 pairs).
    assert "c" not in counts
    assert 170 <= counts["a"] <= 230
    assert counts["a"] + counts["b"] == 300


def test_power_of_two_draws_two_distinct_candidates() -> None:
    entries = [entry("busy", in_flight=1), entry("idle", in_flight=0)]
    policy = PowerOfTwo(random.Random(1))
    # With two candidates both are always drawn, so the idle one always wins.
    assert {policy.choose(entries, key=None).replica_id for _ in range(50)} == {"idle"}


def test_power_of_two_is_reproducible_with_a_seed() -> None:
    entries = [entry(f"r{i}", in_flight=i % 3) for i in range(6)]

    def run() -> list[str]:
        policy = PowerOfTwo(random.Random(42))
        return [policy.choose(entries, key=None).replica_id for _ in range(20)]

    assert run() == run()


def test_power_of_two_single_candidate() -> None:
    only = entry("only", in_flight=100)
    assert PowerOfTwo(random.Random(0)).choose([only], key=None) is only


# -- round robin -------------------------------------------------------------------------------


def test_round_robin_cycles_ignoring_load() -> None:
    entries = [entry("a", in_flight=50), entry("b"), entry("c")]
    policy = RoundRobin()
    assert [policy.choose(entries, key=None).replica_id for _ in range(6)] == list("abcabc")


def test_round_robin_keeps_its_turn_when_the_set_changes() -> None:
    a, b, c, d = (entry(rid) for rid in "abcd")
    policy = RoundRobin()
    assert policy.choose([a, b, c], key=None) is a
    assert policy.choose([a, b, c], key=None) is b
    # b leaves: the turn goes on to c, not back to a and not skipping to the start.
    assert policy.choose([a, c], key=None) is c
    # d joins (listed first, even): it takes its place in id order after c.
    assert policy.choose([d, a, b, c], key=None) is d
    assert policy.choose([d, a, b, c], key=None) is a
