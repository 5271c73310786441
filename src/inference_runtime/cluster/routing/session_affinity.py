"""``SessionAffinity``: the same session key goes to the same replica (warm prefix caches).

A consistent hash ring maps keys to replicas, so a replica joining or leaving moves only the keys
that belong to it; everyone else's cache stays warm. Points come from ``hashlib.blake2b`` so every
process (and every restart) agrees on the mapping; Python's ``hash()`` is salted per process.
"""

from __future__ import annotations

import hashlib
from bisect import bisect_right
from collections.abc import Sequence

from inference_runtime.cluster.routing.least_loaded import LeastLoaded
from inference_runtime.cluster.routing.policy import ReplicaEntry

VIRTUAL_NODES = 100
"""Points per replica on the ring; more points, more even shares."""
_RING_CACHE_SIZE = 16


def ring_point(data: str) -> int:
    """A stable 64-bit position on the ring."""
    return int.from_bytes(hashlib.blake2b(data.encode(), digest_size=8).digest(), "big")


class HashRing:
    """The ring over one set of replica ids."""

    __slots__ = ("_owners", "_points")

    def __init__(self, replica_ids: frozenset[str], virtual_nodes: int = VIRTUAL_NODES) -> None:
        ring = sorted(
            (ring_point(f"{rid}#{n}"), rid) for rid in replica_ids for n in range(virtual_nodes)
        )
        self._points = [point for point, _ in ring]
        self._owners = [rid for _, rid in ring]

    def owner(self, key: str) -> str:
        """The replica id of the first point clockwise from the key's point."""
        index = bisect_right(self._points, ring_point(key))
        return self._owners[index % len(self._owners)]


class SessionAffinity:
    """Routes by session key on a consistent hash ring, with an overload guard.

    The ring is built over the current candidates (so an excluded or unhealthy replica's keys move
    to its ring successor, and come back with it); rings are cached per candidate set. When the
    key's replica is overloaded (``in_flight >= max_concurrent``) and another candidate has fewer
    in flight, affinity yields to least-loaded: a warm cache is not worth a queue. Requests without
    a key are routed least-loaded.
    """

    __slots__ = ("_fallback", "_rings", "_virtual_nodes")

    def __init__(self, virtual_nodes: int = VIRTUAL_NODES) -> None:
        if virtual_nodes < 1:
            raise ValueError("virtual_nodes must be >= 1")
        self._virtual_nodes = virtual_nodes
        self._rings: dict[frozenset[str], HashRing] = {}
        self._fallback = LeastLoaded()

    def ring(self, replica_ids: frozenset[str]) -> HashRing:
        ring = self._rings.get(replica_ids)
        if ring is None:
            if len(self._rings) >= _RING_CACHE_SIZE:
                del self._rings[next(iter(self._rings))]  # oldest first
            ring = self._rings[replica_ids] = HashRing(replica_ids, self._virtual_nodes)
        return ring

    def choose(self, candidates: Sequence[ReplicaEntry], *, key: str | None) -> ReplicaEntry:
        if key is None or len(candidates) == 1:
            return self._fallback.choose(candidates, key=None)
        by_id = {entry.replica_id: entry for entry in candidates}
        chosen = by_id[self.ring(frozenset(by_id)).owner(key)]
        if chosen.overloaded and any(e.in_flight < chosen.in_flight for e in candidates):
            return self._fallback.choose(candidates, key=None)
        return chosen
