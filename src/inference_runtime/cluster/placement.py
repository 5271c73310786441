"""Placement: which node, and which GPU indices on it, each replica gets.

Two levels, as in the seed: :class:`Placer` picks a node for a replica (spreading a
deployment's replicas over nodes), then that node's :class:`GpuPlacer` picks device indices
(spreading replicas over GPUs, packing one replica's GPUs on its node). Both are plain classes;
``DeploymentPlacementActor`` is the shell the manager asks.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from inference_runtime.actors import Actor
from inference_runtime.cluster.inventory import GpuInfo, NodeInfo
from inference_runtime.errors import InferenceRuntimeError, PlacementFailed


@dataclass(frozen=True, slots=True)
class Placement:
    node_id: str
    gpu_indices: tuple[int, ...] = ()

    @property
    def device(self) -> str:
        """What the runner is given: ``cpu``, ``cuda:3`` or, for several GPUs, ``cuda:1,2``."""
        if not self.gpu_indices:
            return "cpu"
        return "cuda:" + ",".join(str(i) for i in self.gpu_indices)

    def describe(self) -> str:
        return f"{self.node_id}/{self.device}"


@dataclass(frozen=True, slots=True)
class _Grant:
    deployment: str
    node_id: str
    gpu_indices: tuple[int, ...]
    memory_mib: int | None
    """Per GPU; ``None``: the GPUs are held whole."""
    cpus: float = 0.0


class GpuPlacer:
    """One node's GPUs and who holds them."""

    def __init__(self, gpus: Iterable[GpuInfo]) -> None:
        self.gpus = {gpu.index: gpu for gpu in gpus}
        self.holders: dict[int, dict[str, _Grant]] = {index: {} for index in self.gpus}

    def _free_mib(self, index: int) -> int:
        held = self.holders[index].values()
        return self.gpus[index].memory_free_mib - sum(g.memory_mib or 0 for g in held)

    def fits(self, index: int, memory_mib: int | None) -> bool:
        held = self.holders[index].values()
        if memory_mib is not None and self.gpus[index].memory_total_mib <= 0:
            memory_mib = None  # its memory is not known (a Ray node's GPU): held whole
        if any(g.memory_mib is None for g in held):
            return False  # held whole by another replica
        if memory_mib is None:
            return not held
        return self._free_mib(index) >= memory_mib

    def candidates(self, memory_mib: int | None) -> list[int]:
        return [index for index in self.gpus if self.fits(index, memory_mib)]

    def pick(
        self, deployment: str, count: int, memory_mib: int | None, avoid: frozenset[int]
    ) -> tuple[int, ...] | None:
        """``count`` fitting indices: GPUs holding fewer replicas of ``deployment`` first (so one
        GPU failing does not take them all), then GPUs not in ``avoid`` (where the replica just
        failed), then the least shared and the most free memory."""
        fitting = self.candidates(memory_mib)
        if len(fitting) < count:
            return None

        def order(index: int) -> tuple[int, bool, int, int]:
            held = self.holders[index].values()
            mine = sum(1 for g in held if g.deployment == deployment)
            return (mine, index in avoid, len(held), -self._free_mib(index))

        return tuple(sorted(sorted(fitting, key=order)[:count]))

    def hold(self, replica_id: str, grant: _Grant) -> None:
        for index in grant.gpu_indices:
            self.holders[index][replica_id] = grant

    def release(self, replica_id: str) -> None:
        for held in self.holders.values():
            held.pop(replica_id, None)


def _slots(gpu: GpuInfo, memory_mib: int | None) -> int:
    """Replicas one GPU could hold: one whole, or as many as its memory has room for."""
    if memory_mib is None or gpu.memory_total_mib <= 0:
        return 1
    return gpu.memory_total_mib // max(memory_mib, 1)


class Placer:
    """Every node's inventory and the grants made on it (one writer: not thread-safe)."""

    def __init__(self, nodes: Sequence[NodeInfo]) -> None:
        self.nodes = {node.node_id: node for node in nodes}
        self.gpu_placers = {node.node_id: GpuPlacer(node.gpus) for node in nodes}
        self.grants: dict[str, _Grant] = {}

    def place(
        self,
        *,
        replica_id: str,
        deployment: str,
        gpus: int,
        gpu_memory_gib: float | None = None,
        avoid: Iterable[tuple[str, int]] = (),
        cpus: float = 0.0,
    ) -> Placement:
        """Grant a node (and ``gpus`` indices on it) to a replica, or raise PlacementFailed.
        Placing a replica id that already holds a grant releases the old one first. ``cpus``:
        CPUs the replica reserves on its node (the Ray backend's bundles); 0: not counted."""
        self.release(replica_id)
        if not self.nodes:
            raise PlacementFailed("no node is known to the placement")
        memory = None if gpu_memory_gib is None else int(gpu_memory_gib * 1024)
        avoided = frozenset(avoid)
        picks: list[tuple[tuple[int, int, int], str, tuple[int, ...]]] = []
        for node_id, placer in self.gpu_placers.items():
            if cpus and self._cpus_used(node_id) + cpus > self.nodes[node_id].cpus + 1e-9:
                continue
            mine = sum(
                1
                for g in self.grants.values()
                if g.deployment == deployment and g.node_id == node_id
            )
            if gpus == 0:
                picks.append(((mine, 0, len(self._on(node_id))), node_id, ()))
                continue
            skip = frozenset(i for n, i in avoided if n == node_id)
            indices = placer.pick(deployment, gpus, memory, skip)
            if indices is not None:
                picks.append(
                    ((mine, len(skip & set(indices)), len(self._on(node_id))), node_id, indices)
                )
        if not picks:
            raise PlacementFailed(self._why(gpus, memory, cpus))
        _, node_id, indices = min(picks)
        grant = _Grant(deployment, node_id, indices, memory, cpus)
        self.grants[replica_id] = grant
        self.gpu_placers[node_id].hold(replica_id, grant)
        return Placement(node_id, indices)

    def update(self, nodes: Sequence[NodeInfo]) -> list[str]:
        """Take a new inventory: nodes that left lose their grants (returned: the replica ids
        that held them), new nodes join, and grants on the nodes that stay are kept."""
        fresh = {node.node_id: node for node in nodes}
        lost = [rid for rid, g in self.grants.items() if g.node_id not in fresh]
        for rid in lost:
            del self.grants[rid]
        for node_id, node in fresh.items():
            if self.nodes.get(node_id) != node:
                placer = GpuPlacer(node.gpus)
                for rid, grant in self.grants.items():
                    if grant.node_id == node_id and all(
                        i in placer.gpus for i in grant.gpu_indices
                    ):
                        placer.hold(rid, grant)
                self.gpu_placers[node_id] = placer
        for node_id in set(self.nodes) - set(fresh):
            del self.gpu_placers[node_id]
        self.nodes = fresh
        return lost

    def release(self, replica_id: str) -> None:
        grant = self.grants.pop(replica_id, None)
        if grant is not None:
            self.gpu_placers[grant.node_id].release(replica_id)

    def _on(self, node_id: str) -> list[_Grant]:
        return [g for g in self.grants.values() if g.node_id == node_id]

    def _cpus_used(self, node_id: str) -> float:
        return sum(g.cpus for g in self._on(node_id))

    def _why(self, gpus: int, memory_mib: int | None, cpus: float = 0.0) -> str:
        if cpus:
            free = max(node.cpus - self._cpus_used(n) for n, node in self.nodes.items())
            if free + 1e-9 < cpus:
                return f"needs {cpus:g} CPUs per replica; {max(free, 0):g} free on any node"
        best = max((len(p.candidates(memory_mib)) for p in self.gpu_placers.values()), default=0)
        total = max((len(p.gpus) for p in self.gpu_placers.values()), default=0)
        need = f"needs {gpus} GPU{'s' if gpus != 1 else ''} per replica"
        if memory_mib is not None:
            need += f" with {memory_mib / 1024:g} GiB free each"
        if total < gpus:
            where = "no node has that many GPUs" if total else "no node has a GPU"
            return f"{need}; {where} (the most on one node: {total})"
        return f"{need}, {best} free"

    def capacity(self, *, gpus: int, gpu_memory_gib: float | None, cpus: float) -> int | None:
        """The most replicas of this shape the nodes could ever hold, all else gone (by their
        GPUs' total memory, not what is free now); ``None``: no bound (no GPU, no CPU count)."""
        if gpus == 0 and not cpus:
            return None
        memory = None if gpu_memory_gib is None else int(gpu_memory_gib * 1024)
        total = 0
        for node in self.nodes.values():
            fits: list[int] = []
            if cpus:
                fits.append(int(node.cpus / cpus + 1e-9))
            if gpus:
                fits.append(sum(_slots(gpu, memory) for gpu in node.gpus) // gpus)
            total += min(fits)
        return total

    def statistics(self) -> dict[str, Any]:
        return {
            node_id: {
                "cpus": node.cpus,
                "memory_mib": node.memory_mib,
                "gpus": [
                    {
                        "index": gpu.index,
                        "name": gpu.name,
                        "memory_total_mib": gpu.memory_total_mib,
                        "memory_free_mib": gpu.memory_free_mib,
                        "replicas": sorted(self.gpu_placers[node_id].holders[gpu.index]),
                    }
                    for gpu in node.gpus
                ],
            }
            for node_id, node in self.nodes.items()
        }


@dataclass(frozen=True, slots=True)
class PlaceReplica:
    """Ask: a :class:`Placement` for the replica, or :class:`PlacementFailed`."""

    replica_id: str
    deployment: str
    gpus: int
    gpu_memory_gib: float | None = None
    avoid: tuple[tuple[str, int], ...] = ()
    """(node, GPU index) pairs to use only when nothing else fits (where it just failed)."""
    cpus: float = 0.0
    """CPUs the replica reserves on its node (counted only when not 0)."""


@dataclass(frozen=True, slots=True)
class GetCapacity:
    """Ask: the most replicas of this shape the nodes could ever hold (``Placer.capacity``);
    ``None`` when there is no bound, or the nodes may change (a Ray cluster grows)."""

    gpus: int
    gpu_memory_gib: float | None = None
    cpus: float = 0.0


@dataclass(frozen=True, slots=True)
class ReleaseReplica:
    replica_id: str


@dataclass(frozen=True, slots=True)
class GetInventory:
    """Ask: the nodes, their GPUs and which replicas hold them (a plain dict)."""


class DeploymentPlacementActor(Actor):
    """``live``: the inventory changes while the runtime runs (nodes of a Ray cluster join and
    leave): it is read again before each placement and inventory answer."""

    replied_errors = (InferenceRuntimeError,)

    def __init__(self, inventory: Callable[[], Sequence[NodeInfo]], *, live: bool = False) -> None:
        self.inventory = inventory
        self.live = live

    def pre_start(self) -> None:
        self.placer = Placer(self.inventory())

    def _refresh(self) -> None:
        if self.live:
            self.placer.update(self.inventory())

    def receive(self, message: Any) -> Any:
        match message:
            case PlaceReplica():
                self._refresh()
                return self.placer.place(
                    replica_id=message.replica_id,
                    deployment=message.deployment,
                    gpus=message.gpus,
                    gpu_memory_gib=message.gpu_memory_gib,
                    avoid=message.avoid,
                    cpus=message.cpus,
                )
            case ReleaseReplica(replica_id=replica_id):
                self.placer.release(replica_id)
            case GetCapacity(gpus=gpus, gpu_memory_gib=memory, cpus=cpus):
                if self.live:
                    return None
                return self.placer.capacity(gpus=gpus, gpu_memory_gib=memory, cpus=cpus)
            case GetInventory():
                self._refresh()
                return self.placer.statistics()
        return None
