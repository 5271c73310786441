"""The Ray cluster as the placement's inventory: its live nodes, their CPUs, memory and GPUs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from inference_runtime.cluster.inventory import GpuInfo, NodeInfo


def nodes_from_ray(nodes: Iterable[Mapping[str, Any]], *, min_cpus: float = 0.0) -> list[NodeInfo]:
    """``ray.nodes()`` as ``NodeInfo``: alive nodes with at least ``min_cpus`` CPUs (a head
    started with ``--num-cpus=0`` takes no replica). Ray counts GPUs but not their memory:
    the GPUs come with their memory unknown (0), so placement holds them whole."""
    result = []
    for node in nodes:
        if not node.get("Alive", False):
            continue
        resources = node.get("Resources") or {}
        cpus = float(resources.get("CPU", 0.0))
        if cpus <= 0 or cpus + 1e-9 < min_cpus:
            continue
        kind = next(
            (k.split(":", 1)[1] for k in resources if k.startswith("accelerator_type:")), "GPU"
        )
        gpus = tuple(GpuInfo(i, kind, 0, 0) for i in range(int(resources.get("GPU", 0))))
        result.append(
            NodeInfo(
                node_id=str(node["NodeID"]),
                cpus=max(1, round(cpus)),
                memory_mib=int(resources.get("memory", 0)) // (1024 * 1024),
                gpus=gpus,
            )
        )
    return sorted(result, key=lambda n: n.node_id)
