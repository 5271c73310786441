"""Session affinity: consistent hashing, stable across processes, with an overload guard."""

from __future__ import annotations

from typing import Any, cast

from inference_runtime.actors import ActorRef
from inference_runtime.cluster.routing import ReplicaEntry, SessionAffinity
from inference_runtime.cluster.routing.session_affinity import HashRing, ring_point
from inference_runtime.types import ReplicaState

KEYS = [f"session-{i}" for i in range(1000)]


def entry(replica_id: str, **fields: Any) -> ReplicaEntry:
    """A healthy entry; policies only store the engine ref, so any object stands in for it."""
    fields.setdefault("state", ReplicaState.HEALTHY)
    return ReplicaEntry(replica_id, cast(ActorRef, object()), **fields)


def owners(policy: SessionAffinity, entries: list[ReplicaEntry]) -> dict[str, str]:
    return {key: policy.choose(entries, key=key).replica_id for key in KEYS}


def test_same_key_same_replica() -> None:
    entries = [entry(f"r{i}") for i in range(3)]
    policy = SessionAffinity()
    first = owners(policy, entries)
    assert owners(policy, entries) == first
    assert owners(SessionAffinity(), list(reversed(entries))) == first  # order does not matter
    assert set(first.values()) == {"r0", "r1", "r2"}


def test_adding_a_replica_moves_only_its_share() -> None:
    three = [entry(f"r{i}") for i in range(3)]
    four = [*three, entry("r3")]
    policy = SessionAffinity()
    before, after = owners(policy, three), owners(policy, four)
    moved = [key for key in KEYS if before[key] != after[key]]
    assert all(after[key] == "r3" for key in moved)  # no key moves between two old replicas
    assert 150 <= len(moved) <= 350  # roughly a quarter of 1000


def test_removing_a_replica_moves_only_its_keys() -> None:
    four = [entry(f"r{i}") for i in range(4)]
    policy = SessionAffinity()
    before, after = owners(policy, four), owners(policy, four[:3])
    for key in KEYS:
        if before[key] != "r3":
            assert after[key] == before[key]


def test_shares_are_roughly_even() -> None:
    ring = HashRing(frozenset({"a", "b", "c", "d"}))
    counts: dict[str, int] = {}
    for key in KEYS:
        counts[ring.owner(key)] = counts.get(ring.owner(key), 0) + 1
    assert all(150 <= n <= 350 for n in counts.values()), counts


def test_mapping_is_stable_across_processes() -> None:
    """Pinned values: blake2b gives them in every process; Python's salted hash() would not."""
    assert ring_point("session-0") == 0xB65F95CF544107CF
    ring = HashRing(frozenset({"r0", "r1", "r2"}))
    assert [ring.owner(k) for k in KEYS[:6]] == ["r1", "r1", "r2", "r1", "r1", "r2"]


def test_overloaded_replica_yields_to_least_loaded() -> None:
    entries = [entry(f"r{i}", max_concurrent=4) for i in range(3)]
    policy = SessionAffinity()
    home = policy.choose(entries, key="user-1")
    home.in_flight = 4  # at capacity
    others = [e for e in entries if e is not home]
    others[0].in_flight, others[1].in_flight = 2, 1
    assert policy.choose(entries, key="user-1") is others[1]
    home.in_flight = 3  # below capacity again: affinity wins over load
    assert policy.choose(entries, key="user-1") is home


def test_overloaded_everywhere_keeps_affinity() -> None:
    entries = [entry(f"r{i}", max_concurrent=2, in_flight=5) for i in range(3)]
    policy = SessionAffinity()
    home = policy.choose(entries, key="user-9")
    assert all(policy.choose(entries, key="user-9") is home for _ in range(5))


def test_no_key_routes_least_loaded() -> None:
    entries = [entry("a", in_flight=2), entry("b", in_flight=0)]
    assert SessionAffinity().choose(entries, key=None).replica_id == "b"


def test_excluded_replica_keys_go_to_its_successor_and_come_back() -> None:
    entries = [entry(f"r{i}") for i in range(3)]
    policy = SessionAffinity()
    home = policy.choose(entries, key="k")
    rest = [e for e in entries if e is not home]
    assert policy.choose(rest, key="k") is not home
    assert policy.choose(entries, key="k") is home
