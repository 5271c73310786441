"""The Ray backend: every replica in a Ray actor, placed through placement groups on the node
that ``DeploymentPlacementActor`` chose from the Ray cluster's inventory.

The only part of the runtime that imports Ray (a contract in ``pyproject.toml``); the runtime
imports it only when ``cluster.backend`` is ``ray``. The head process keeps the whole control
plane and the gateway: per replica, a proxy actor (``shell.RayReplicaActor``) stands where a
local engine would, and its engine runs in an ``EngineHost`` Ray actor (``host.py``).
"""

from inference_runtime.cluster.ray.backend import RayBackend, RayLauncher
from inference_runtime.cluster.ray.host import EngineHost
from inference_runtime.cluster.ray.inventory import nodes_from_ray
from inference_runtime.cluster.ray.shell import ACTOR_PREFIX, RayReplicaActor

__all__ = [
    "ACTOR_PREFIX",
    "EngineHost",
    "RayBackend",
    "RayLauncher",
    "RayReplicaActor",
    "nodes_from_ray",
]
