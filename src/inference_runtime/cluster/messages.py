"""The coordinator's protocol: what it is told, what it answers, and its snapshot.

Plain frozen data so any layer above (manager, request actors, gateway admin) can build and read
it; the routing table and the actor both speak it.
"""

from __future__ import annotations

from dataclasses import dataclass

from inference_runtime.actors import ActorRef
from inference_runtime.types import ReplicaState
from inference_runtime.types.deployment import ROUTING_POLICIES


@dataclass(frozen=True, slots=True)
class RegisterReplica:
    """Add a replica (or replace the entry of the same ``replica_id``, keeping its in-flight count).

    ``routing`` becomes the deployment's policy; it is checked here, at construction, so a bad
    name fails the sender and never the coordinator.
    """

    deployment: str
    replica_id: str
    engine: ActorRef
    routing: str = "least_loaded"
    max_concurrent: int = 64
    state: ReplicaState = ReplicaState.STARTING

    def __post_init__(self) -> None:
        if self.routing not in ROUTING_POLICIES:
            raise ValueError(
                f"routing: {self.routing!r} is not one of {', '.join(ROUTING_POLICIES)}"
            )
        if self.max_concurrent < 1:
            raise ValueError("max_concurrent: must be >= 1")


@dataclass(frozen=True, slots=True)
class DeregisterReplica:
    """Remove a replica from the table (unknown ids are ignored)."""

    deployment: str
    replica_id: str


@dataclass(frozen=True, slots=True)
class SetReplicaState:
    """The manager's word on a replica's state (draining before removal, failed by supervision).

    DRAINING and FAILED set this way hold against the engine's own load reports until the manager
    sets another state or registers the replica again.
    """

    deployment: str
    replica_id: str
    state: ReplicaState
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class Route:
    """Ask for a replica. ``exclude``: replica ids not to use (those a retry already tried)."""

    deployment: str
    session_key: str | None = None
    exclude: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class RouteLease:
    """The answer to :class:`Route`: the replica now counts this request in flight until a
    :class:`Release` for it arrives."""

    deployment: str
    replica_id: str
    engine: ActorRef


@dataclass(frozen=True, slots=True)
class Release:
    """A routed request finished (or failed): decrement the replica's in-flight count."""

    deployment: str
    replica_id: str


@dataclass(frozen=True, slots=True)
class GetRoutingTable:
    """Ask for a :class:`RoutingTableSnapshot`."""


@dataclass(frozen=True, slots=True)
class ReplicaSnapshot:
    """One replica's row at the moment of the snapshot."""

    deployment: str
    replica_id: str
    state: ReplicaState
    in_flight: int
    waiting: int
    running: int
    max_concurrent: int
    context_restarts: int
    routed_total: int
    reason: str | None


@dataclass(frozen=True, slots=True)
class RoutingTableSnapshot:
    """Every deployment's replicas, in registration order; a copy, safe to keep."""

    deployments: dict[str, tuple[ReplicaSnapshot, ...]]

    def replica(self, deployment: str, replica_id: str) -> ReplicaSnapshot | None:
        for row in self.deployments.get(deployment, ()):
            if row.replica_id == replica_id:
                return row
        return None
