"""The cluster layer: the coordinator (routing table and policies); placement and the deployment
manager build on it."""

from inference_runtime.cluster.coordinator import (
    DeregisterReplica,
    DpCoordinatorActor,
    GetRoutingTable,
    RegisterReplica,
    Release,
    ReplicaSnapshot,
    Route,
    RouteLease,
    RoutingTable,
    RoutingTableSnapshot,
    SetReplicaState,
)
from inference_runtime.cluster.routing import ReplicaEntry, RoutingPolicy, make_policy

__all__ = [
    "DeregisterReplica",
    "DpCoordinatorActor",
    "GetRoutingTable",
    "RegisterReplica",
    "Release",
    "ReplicaEntry",
    "ReplicaSnapshot",
    "Route",
    "RouteLease",
    "RoutingPolicy",
    "RoutingTable",
    "RoutingTableSnapshot",
    "SetReplicaState",
    "make_policy",
]
