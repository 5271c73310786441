"""What a node offers replicas: CPUs, memory and GPUs (plain data, and the local probe)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class GpuInfo:
    index: int
    """The device index on its node (what CUDA calls it with every device visible)."""
    name: str
    memory_total_mib: int
    memory_free_mib: int


@dataclass(frozen=True, slots=True)
class NodeInfo:
    node_id: str
    cpus: int
    memory_mib: int
    gpus: tuple[GpuInfo, ...] = ()


def _memory_mib() -> int:
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1024 * 1024)
    except (OSError, ValueError, AttributeError):
        return 0


def probe_local_node() -> NodeInfo:
    """This machine: its CPUs and memory, and its GPUs through NVML when there are any."""
    from inference_runtime.cluster.nvml import probe_gpus

    return NodeInfo(
        node_id=socket.gethostname() or "local",
        cpus=os.cpu_count() or 1,
        memory_mib=_memory_mib(),
        gpus=tuple(probe_gpus()),
    )
