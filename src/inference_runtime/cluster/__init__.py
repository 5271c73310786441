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
from inference_runtime.cluster.manager import (
    ApplyDeployment,
    CatalogChanged,
    DeleteDeployment,
    DeploymentManagerActor,
    ListDeployments,
    WatchCatalog,
)
from inference_runtime.cluster.routing import ReplicaEntry, RoutingPolicy, make_policy

__all__ = [
    "ApplyDeployment",
    "CatalogChanged",
    "DeleteDeployment",
    "DeploymentManagerActor",
    "DeregisterReplica",
    "DpCoordinatorActor",
    "GetRoutingTable",
    "ListDeployments",
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
    "WatchCatalog",
    "make_policy",
]
