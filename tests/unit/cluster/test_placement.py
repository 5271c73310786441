"""Placer and GpuPlacer: spreading, packing, memory, avoidance, and the reasons for refusals."""

from __future__ import annotations

import pytest

from inference_runtime.cluster import GpuInfo, NodeInfo, Placement, Placer
from inference_runtime.errors import PlacementFailed


def node(node_id: str, *free_gib: float) -> NodeInfo:
    gpus = tuple(
        GpuInfo(index=i, name="Fake", memory_total_mib=81920, memory_free_mib=int(g * 1024))
        for i, g in enumerate(free_gib)
    )
    return NodeInfo(node_id=node_id, cpus=16, memory_mib=131072, gpus=gpus)


def test_cpu_replicas_need_no_gpu_and_spread_over_nodes() -> None:
    placer = Placer([node("a"), node("b")])
    first = placer.place(replica_id="d#0", deployment="d", gpus=0)
    second = placer.place(replica_id="d#1", deployment="d", gpus=0)
    assert {first.node_id, second.node_id} == {"a", "b"}
    assert first.device == "cpu" and first.gpu_indices == ()


def test_replicas_of_one_deployment_spread_over_gpus() -> None:
    placer = Placer([node("a", 80, 80, 80, 80)])
    got = [placer.place(replica_id=f"d#{i}", deployment="d", gpus=1) for i in range(4)]
    assert sorted(p.gpu_indices[0] for p in got) == [0, 1, 2, 3]
    with pytest.raises(PlacementFailed, match="needs 1 GPU per replica, 0 free"):
        placer.place(replica_id="d#4", deployment="d", gpus=1)


def test_one_replica_s_gpus_are_packed_on_one_node() -> None:
    placer = Placer([node("a", 80), node("b", 80, 80)])
    placement = placer.place(replica_id="big#0", deployment="big", gpus=2)
    assert placement == Placement("b", (0, 1))
    assert placement.device == "cuda:0,1"


def test_memory_sharing_and_whole_gpus_do_not_mix() -> None:
    placer = Placer([node("a", 40)])
    placer.place(replica_id="s#0", deployment="s", gpus=1, gpu_memory_gib=15)
    placer.place(replica_id="s#1", deployment="s", gpus=1, gpu_memory_gib=15)
    with pytest.raises(PlacementFailed, match="15 GiB free each"):
        placer.place(replica_id="s#2", deployment="s", gpus=1, gpu_memory_gib=15)
    with pytest.raises(PlacementFailed):
        placer.place(replica_id="w#0", deployment="w", gpus=1)  # whole GPU: it is shared now
    placer.release("s#0")
    placer.release("s#1")
    assert placer.place(replica_id="w#0", deployment="w", gpus=1).gpu_indices == (0,)
    with pytest.raises(PlacementFailed):
        placer.place(replica_id="s#3", deployment="s", gpus=1, gpu_memory_gib=1)


def test_a_failed_gpu_is_avoided_when_another_fits() -> None:
    placer = Placer([node("a", 80, 80)])
    first = placer.place(replica_id="d#0", deployment="d", gpus=1)
    again = placer.place(
        replica_id="d#0", deployment="d", gpus=1, avoid=[("a", first.gpu_indices[0])]
    )
    assert again.gpu_indices != first.gpu_indices
    # with nowhere else to go, the avoided GPU is still used
    placer = Placer([node("a", 80)])
    only = placer.place(replica_id="d#0", deployment="d", gpus=1)
    assert placer.place(replica_id="d#0", deployment="d", gpus=1, avoid=[("a", 0)]) == only


def test_reasons_name_the_shortfall() -> None:
    with pytest.raises(PlacementFailed, match="no node has a GPU"):
        Placer([node("cpu-only")]).place(replica_id="g#0", deployment="g", gpus=1)
    with pytest.raises(PlacementFailed, match="needs 2 GPUs per replica; no node has that many"):
        Placer([node("a", 80)]).place(replica_id="g#0", deployment="g", gpus=2)
    placer = Placer([node("a", 80, 80)])
    placer.place(replica_id="x#0", deployment="x", gpus=1)
    with pytest.raises(PlacementFailed, match="needs 2 GPUs per replica, 1 free"):
        placer.place(replica_id="g#0", deployment="g", gpus=2)


def test_statistics_show_who_holds_what() -> None:
    placer = Placer([node("a", 80, 80)])
    placer.place(replica_id="d#0", deployment="d", gpus=1)
    gpus = placer.statistics()["a"]["gpus"]
    assert [g["replicas"] for g in gpus] == [["d#0"], []]


def test_the_local_probe_is_a_cpu_node_without_nvml(monkeypatch: pytest.MonkeyPatch) -> None:
    from inference_runtime.cluster import nvml, probe_local_node

    monkeypatch.setattr(nvml, "_library", lambda: None)
    probed = probe_local_node()
    assert probed.gpus == () and probed.cpus >= 1 and probed.memory_mib > 0


def test_a_new_inventory_keeps_grants_on_staying_nodes_and_drops_lost_ones() -> None:
    placer = Placer([node("a", 80), node("b", 80)])
    on = {placer.place(replica_id=f"d#{i}", deployment="d", gpus=1).node_id: i for i in range(2)}
    lost = placer.update([node("a", 80), node("c", 80, 80)])
    assert lost == [f"d#{on['b']}"]
    assert sorted(placer.nodes) == ["a", "c"]
    # a's GPU is still held; the replica that was on b goes to c
    again = placer.place(replica_id=f"d#{on['b']}", deployment="d", gpus=1)
    assert again.node_id == "c"
    with pytest.raises(PlacementFailed):
        placer.place(replica_id="w#0", deployment="w", gpus=2)  # c has one GPU free now


def test_gpus_of_unknown_memory_are_held_whole() -> None:
    unknown = NodeInfo("r", cpus=4, memory_mib=1024, gpus=(GpuInfo(0, "GPU", 0, 0),))
    placer = Placer([unknown])
    assert placer.place(replica_id="s#0", deployment="s", gpus=1, gpu_memory_gib=10).node_id == "r"
    with pytest.raises(PlacementFailed):
        placer.place(replica_id="s#1", deployment="s", gpus=1, gpu_memory_gib=1)


def test_cpus_are_counted_when_replicas_reserve_them() -> None:
    small = NodeInfo("s", cpus=1, memory_mib=1024)
    big = NodeInfo("b", cpus=2, memory_mib=1024)
    placer = Placer([small, big])
    nodes = [
        placer.place(replica_id=f"d#{i}", deployment="d", gpus=0, cpus=1).node_id for i in range(3)
    ]
    assert sorted(nodes) == ["b", "b", "s"]
    with pytest.raises(PlacementFailed, match="needs 1 CPUs per replica; 0 free on any node"):
        placer.place(replica_id="d#3", deployment="d", gpus=0, cpus=1)
    placer.release("d#0")
    assert placer.place(replica_id="d#3", deployment="d", gpus=0, cpus=1).node_id == nodes[0]
    # not counted when not asked (the local backend)
    assert placer.place(replica_id="x#0", deployment="x", gpus=0).node_id in {"s", "b"}
