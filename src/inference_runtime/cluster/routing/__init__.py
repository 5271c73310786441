"""Routing policies: one per module, each behind the one-method :class:`RoutingPolicy` interface.

A deployment names its policy (``Deployment.routing``); :func:`make_policy` builds a fresh
instance, one per deployment, since policies may keep state between calls.
"""

from __future__ import annotations

from collections.abc import Callable

from inference_runtime.cluster.routing.least_loaded import LeastLoaded
from inference_runtime.cluster.routing.policy import ReplicaEntry, RoutingPolicy
from inference_runtime.cluster.routing.power_of_two import PowerOfTwo
from inference_runtime.cluster.routing.round_robin import RoundRobin
from inference_runtime.cluster.routing.session_affinity import SessionAffinity

POLICIES: dict[str, Callable[[], RoutingPolicy]] = {
    "least_loaded": LeastLoaded,
    "power_of_two": PowerOfTwo,
    "round_robin": RoundRobin,
    "session_affinity": SessionAffinity,
}
"""Policy name (as in ``types.deployment.ROUTING_POLICIES``) to its factory."""


def make_policy(name: str) -> RoutingPolicy:
    """A fresh policy for ``name``; raises ``ValueError`` naming the known policies."""
    factory = POLICIES.get(name)
    if factory is None:
        raise ValueError(f"unknown routing policy {name!r}; known: {', '.join(POLICIES)}")
    return factory()


__all__ = [
    "POLICIES",
    "LeastLoaded",
    "PowerOfTwo",
    "ReplicaEntry",
    "RoundRobin",
    "RoutingPolicy",
    "SessionAffinity",
    "make_policy",
]
