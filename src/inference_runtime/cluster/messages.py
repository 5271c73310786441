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


# -- several gateways (``cluster.shared_table``, ``cluster.sharing``) -----------------------

ReplicaKey = tuple[str, str]
"""``(deployment, replica_id)``."""


@dataclass(frozen=True, slots=True)
class ReplicaHost:
    """A Ray replica's proxy tells the coordinator the name of its host actor, so that the
    other gateways can reach the same engine (ignored by a table that is not shared)."""

    deployment: str
    replica_id: str
    host: str


@dataclass(frozen=True, slots=True)
class ExportRoutes:
    """Ask a shared table for :class:`RoutesExport`: what this runtime publishes."""


@dataclass(frozen=True, slots=True)
class SharedReplica:
    """A replica as the head publishes it: where its engine is and how to route to it.
    ``held``: the state the head holds it in (DRAINING or FAILED), else ``None``."""

    deployment: str
    replica_id: str
    host: str
    routing: str
    max_concurrent: int
    held: ReplicaState | None
    reason: str | None


@dataclass(frozen=True, slots=True)
class RoutesExport:
    """This runtime's own in-flight count per replica (those not zero) and, for the replicas
    whose host is known here (the head's), their membership."""

    counts: dict[ReplicaKey, int]
    replicas: tuple[SharedReplica, ...]


@dataclass(frozen=True, slots=True)
class ApplyRoutes:
    """What the board says, for the shared table: the other runtimes' in-flight counts per
    replica (the table routes on its own count plus these), the drains that every gateway has
    seen (``acked``), and the states the head holds replicas in (for a gateway)."""

    others: dict[ReplicaKey, int]
    acked: frozenset[ReplicaKey] = frozenset()
    held: dict[ReplicaKey, tuple[ReplicaState, str | None]] | None = None


@dataclass(frozen=True, slots=True)
class WaitSynced:
    """Ask a runtime's board sync actor: answered once its first sync has been applied (a
    gateway then knows what to serve)."""
