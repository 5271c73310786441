"""What a routing policy sees and the one-method interface every policy implements.

Policies are pure choosers: the :class:`~inference_runtime.cluster.table.RoutingTable` filters the
replicas that may take a request (healthy, not excluded) and counts the route once a policy has
picked one. Keeping policies free of bookkeeping makes each one a few lines, testable with bare
entries, and swappable per deployment.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from inference_runtime.actors import ActorRef
from inference_runtime.types import ReplicaState


class ReplicaEntry:
    """One replica's row in the routing table: where it is and how loaded it is right now.

    ``in_flight`` is the coordinator's exact count (incremented when a route is handed out,
    decremented on release), so policies decide on fresh numbers even between engine reports;
    ``waiting`` and ``running`` are the engine's last report. With several gateways
    (``cluster.shared_table``), ``in_flight`` also holds ``others``: the requests the other
    gateways count on this replica, as they last published them. Mutable and slotted because the
    table updates these fields on every request.
    """

    __slots__ = (
        "context_restarts",
        "engine",
        "in_flight",
        "max_concurrent",
        "others",
        "reason",
        "replica_id",
        "routed_total",
        "running",
        "state",
        "waiting",
    )

    def __init__(
        self,
        replica_id: str,
        engine: ActorRef,
        *,
        state: ReplicaState = ReplicaState.STARTING,
        in_flight: int = 0,
        waiting: int = 0,
        running: int = 0,
        max_concurrent: int = 64,
        context_restarts: int = 0,
        routed_total: int = 0,
        reason: str | None = None,
    ) -> None:
        self.replica_id = replica_id
        self.engine = engine
        self.state = state
        self.in_flight = in_flight
        self.waiting = waiting
        self.running = running
        self.max_concurrent = max_concurrent
        self.context_restarts = context_restarts
        self.routed_total = routed_total
        self.reason = reason
        self.others = 0

    @property
    def overloaded(self) -> bool:
        """True when the replica already has as many requests in flight as it runs at once."""
        return self.in_flight >= self.max_concurrent

    def __repr__(self) -> str:
        return (
            f"ReplicaEntry({self.replica_id!r}, {self.state.value}, in_flight={self.in_flight}, "
            f"waiting={self.waiting}, running={self.running})"
        )


class RoutingPolicy(Protocol):
    """Picks one replica for a request. One instance per deployment, so it may keep state
    (a rotation position, a hash ring) across calls."""

    def choose(self, candidates: Sequence[ReplicaEntry], *, key: str | None) -> ReplicaEntry:
        """Pick from ``candidates`` (non-empty, all routable). ``key`` is the request's session
        key, if any; only affinity policies use it."""
        ...
