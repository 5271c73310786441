"""DeploymentManagerActor: the catalog reconciled into replicas (placement, rolling updates,
drains, self-healing) and persisted in the catalog store."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

import pytest

from inference_runtime.actors import Actor, ActorRef, ActorSystem, Props
from inference_runtime.cluster import (
    ApplyDeployment,
    CatalogChanged,
    DeleteDeployment,
    DeploymentManagerActor,
    DeploymentPlacementActor,
    DpCoordinatorActor,
    GetDeploymentStatus,
    GetRoutingTable,
    GpuInfo,
    ListDeployments,
    NodeInfo,
    ScaleDeployment,
    WatchCatalog,
)
from inference_runtime.config import ManagerConfig
from inference_runtime.errors import Conflict, NotFound, RequestError
from inference_runtime.storage import CatalogStore, open_database
from inference_runtime.testing import FakeRunner
from inference_runtime.types import Deployment, ReplicaState

FAST = ManagerConfig(health_interval_s=0.05, hang_timeout_s=0.3, replace_backoff_s=0.01)


def node(*free_gib: float, node_id: str = "n1") -> NodeInfo:
    gpus = tuple(
        GpuInfo(index=i, name="Fake GPU", memory_total_mib=81920, memory_free_mib=int(g * 1024))
        for i, g in enumerate(free_gib)
    )
    return NodeInfo(node_id=node_id, cpus=8, memory_mib=65536, gpus=gpus)


class Subscriber(Actor):
    def __init__(self, seen: list[Any]) -> None:
        self.seen = seen

    def receive(self, message: Any) -> None:
        if isinstance(message, CatalogChanged):
            self.seen.append(sorted(message.deployments))


@pytest.fixture
async def system() -> Any:
    system = ActorSystem.create("mgr-test")
    yield system
    await system.shutdown()


def start(
    system: ActorSystem,
    *,
    nodes: list[NodeInfo] | None = None,
    store: CatalogStore | None = None,
    initial: tuple[Deployment, ...] = (),
    devices: list[str] | None = None,
    config: ManagerConfig = FAST,
) -> tuple[ActorRef, ActorRef]:
    dp = system.actor_of(Props(DpCoordinatorActor), "dp")
    inventory = nodes if nodes is not None else [node()]
    placement = system.actor_of(Props(lambda: DeploymentPlacementActor(lambda: inventory)))

    def factory(dep: Deployment, *, device: str) -> FakeRunner:
        if devices is not None:
            devices.append(device)
        return FakeRunner(dep, device=device)

    mgr = system.actor_of(
        Props(
            lambda: DeploymentManagerActor(
                coordinator=dp,
                placement=placement,
                runner_factory=factory,
                store=store,
                initial=initial,
                config=config,
            )
        ),
        "mgr",
    )
    return dp, mgr


async def until(check: Callable[[], Any], *, timeout: float = 5.0) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition never held")
        await asyncio.sleep(0.01)


async def healthy_ids(dp: ActorRef, name: str) -> list[str]:
    rows = (await dp.ask(GetRoutingTable())).deployments.get(name, ())
    return sorted(r.replica_id for r in rows if r.state is ReplicaState.HEALTHY)


async def status(mgr: ActorRef, name: str) -> dict[str, Any]:
    result: dict[str, Any] = await mgr.ask(GetDeploymentStatus(name))
    return result


async def test_apply_scale_delete_and_subscribers(system: ActorSystem) -> None:
    dp, mgr = start(system)
    seen: list[Any] = []
    mgr.tell(WatchCatalog(system.actor_of(Props(lambda: Subscriber(seen)))))
    dep = Deployment(name="org/model:v1", runtime="fake", replicas=2)
    assert await mgr.ask(ApplyDeployment(dep)) == ("org/model:v1#0", "org/model:v1#1")
    await until(lambda: _count(dp, "org/model:v1", 2))
    assert await mgr.ask(ApplyDeployment(dep)) == ("org/model:v1#0", "org/model:v1#1")  # no-op
    with pytest.raises(Conflict):
        await mgr.ask(ApplyDeployment(dep, create=True))
    await mgr.ask(ScaleDeployment("org/model:v1", 3))
    await until(lambda: _count(dp, "org/model:v1", 3))
    view = await until(lambda: _state(mgr, "org/model:v1", "ready"))
    assert view["replicas"] == {"desired": 3, "ready": 3, "total": 3}
    assert (await mgr.ask(ListDeployments()))[0].replicas == 3
    await mgr.ask(ScaleDeployment("org/model:v1", 1))
    await until(lambda: _rows(dp, "org/model:v1", 1))
    assert await healthy_ids(dp, "org/model:v1") == ["org/model:v1#0"]  # the newest go first
    await mgr.ask(DeleteDeployment("org/model:v1"))
    with pytest.raises(NotFound):
        await mgr.ask(DeleteDeployment("org/model:v1"))
    await until(lambda: _gone(dp, "org/model:v1"))
    assert seen[0] == [] and seen[-1] == [] and ["org/model:v1"] in seen


async def test_a_changed_spec_rolls_replicas_one_at_a_time(system: ActorSystem) -> None:
    dp, mgr = start(system)
    dep = Deployment(name="m", runtime="fake", replicas=2)
    await mgr.ask(ApplyDeployment(dep))
    await until(lambda: _count(dp, "m", 2))
    seen_counts: list[int] = []

    async def watch() -> None:
        while True:
            seen_counts.append(len(await healthy_ids(dp, "m")))
            await asyncio.sleep(0.002)

    watcher = asyncio.ensure_future(watch())
    changed = Deployment(name="m", runtime="fake", replicas=2, runtime_config={"output_tokens": 5})
    assert await mgr.ask(ApplyDeployment(changed)) == ()  # nothing runs the new spec yet
    await until(lambda: _ids(dp, "m", ["m#2", "m#3"]))
    watcher.cancel()
    assert min(seen_counts) >= 2  # never fewer than the desired count healthy during the roll
    assert max(seen_counts) <= 3  # one extra at most: one replica at a time
    view = await until(lambda: _state(mgr, "m", "ready"))
    assert view["revision"] == 2


async def test_gpu_replicas_spread_and_see_only_their_gpus(system: ActorSystem) -> None:
    devices: list[str] = []
    dp, mgr = start(system, nodes=[node(80, 80, 80)], devices=devices)
    await mgr.ask(ApplyDeployment(Deployment(name="g", runtime="fake", replicas=2, gpus=1)))
    await until(lambda: _count(dp, "g", 2))
    assert sorted(devices) == ["cuda:0", "cuda:1"]
    view = await status(mgr, "g")
    assert sorted(r["gpus"][0] for r in view["replica_list"]) == [0, 1]


async def test_a_replica_that_cannot_be_placed_says_why(system: ActorSystem) -> None:
    dp, mgr = start(system, nodes=[node(80)])
    await mgr.ask(ApplyDeployment(Deployment(name="first", runtime="fake", gpus=1)))
    await mgr.ask(ApplyDeployment(Deployment(name="big", runtime="fake", gpus=1)))
    view = await until(lambda: _state(mgr, "big", "degraded"))
    assert "needs 1 GPU per replica, 0 free" in view["message"]
    assert view["replica_list"][0]["phase"] == "pending"
    # the manager keeps serving everything else
    await mgr.ask(ApplyDeployment(Deployment(name="small", runtime="fake")))
    await until(lambda: _count(dp, "small", 1))


async def test_shared_gpus_by_memory(system: ActorSystem) -> None:
    devices: list[str] = []
    _dp, mgr = start(system, nodes=[node(30, 10)], devices=devices)
    dep = Deployment(name="s", runtime="fake", replicas=3, gpus=1, gpu_memory_gib=12)
    await mgr.ask(ApplyDeployment(dep))
    view = await until(lambda: _state(mgr, "s", "degraded"))
    assert devices == ["cuda:0", "cuda:0"]  # two fit in GPU 0's 30 GiB, none in GPU 1's 10
    assert "needs 1 GPU per replica with 12 GiB free each, 0 free" in view["message"]


async def test_poisoned_beyond_its_window_is_replaced_on_another_gpu(system: ActorSystem) -> None:
    devices: list[str] = []
    dp, mgr = start(system, nodes=[node(80, 80)], devices=devices)
    dep = Deployment(name="p", runtime="fake", gpus=1, runtime_config={"poison_marker": "BOOM"})
    await mgr.ask(ApplyDeployment(dep))
    await until(lambda: _count(dp, "p", 1))
    record = (await status(mgr, "p"))["replica_list"][0]
    first_gpu = record["gpus"][0]
    # four poisons within the window: the replica is taken out, then re-placed
    for _ in range(4):
        await _poison(system, dp, "p")
        await asyncio.sleep(0.05)
    view = await until(lambda: _moved(mgr, "p"))
    replica = view["replica_list"][0]
    assert replica["failures"] == 1 and replica["moves"] == 1
    assert replica["gpus"] != [first_gpu]
    assert [e["event"] for e in replica["history"]].count("failed") == 1
    await until(lambda: _count(dp, "p", 1))


async def test_a_hung_engine_is_detected_and_replaced(system: ActorSystem) -> None:
    dp, mgr = start(system)
    dep = Deployment(name="h", runtime="fake", runtime_config={"hang_marker": "STUCK"})
    await mgr.ask(ApplyDeployment(dep))
    await until(lambda: _count(dp, "h", 1))
    await _send(system, dp, "h", "STUCK please")
    view = await until(lambda: _event(mgr, "h", "hung"), timeout=10)
    assert view["replica_list"][0]["failures"] == 1
    assert "no engine step" in view["replica_list"][0]["last_error"]
    await until(lambda: _count(dp, "h", 1))


async def test_catalog_survives_a_new_manager(system: ActorSystem, tmp_path: Any) -> None:
    db = open_database(str(tmp_path / "state.db"))
    dp, mgr = start(system, store=CatalogStore(db))
    await mgr.ask(ApplyDeployment(Deployment(name="kept", runtime="fake", replicas=2)))
    await until(lambda: _count(dp, "kept", 2))
    await system.shutdown()
    db.close()

    again = ActorSystem.create("mgr-test-2")
    try:
        db = open_database(str(tmp_path / "state.db"))
        config_dep = Deployment(name="from-config", runtime="fake")
        dp, mgr = start(again, store=CatalogStore(db), initial=(config_dep,))
        names = sorted(d.name for d in await mgr.ask(ListDeployments()))
        assert names == ["from-config", "kept"]
        await until(lambda: _count(dp, "kept", 2))
        assert (await status(mgr, "kept"))["source"] == "api"
        assert (await status(mgr, "from-config"))["source"] == "config"
    finally:
        await again.shutdown()
    db.close()


async def test_concurrent_updates_are_serialised(system: ActorSystem, tmp_path: Any) -> None:
    db = open_database(str(tmp_path / "state.db"))
    dp, mgr = start(system, store=CatalogStore(db))
    await mgr.ask(ApplyDeployment(Deployment(name="c", runtime="fake")))
    counts = list(range(1, 6))
    await asyncio.gather(*(mgr.ask(ScaleDeployment("c", n)) for n in counts))
    # the last write wins, every write was a whole spec, and the replicas follow it
    assert (await mgr.ask(ListDeployments()))[0].replicas == 5
    stored = CatalogStore(db).load()
    assert [s.deployment.replicas for s in stored] == [5]
    await until(lambda: _count(dp, "c", 5))
    db.close()


async def test_refuses_what_it_cannot_do(
    system: ActorSystem, monkeypatch: pytest.MonkeyPatch
) -> None:
    from inference_runtime.engine import runtimes

    monkeypatch.setitem(runtimes.REQUIRES, "vllm", ("no_such_module_anywhere",))
    _, mgr = start(system)
    with pytest.raises(RequestError, match="needs no_such_module_anywhere"):
        await mgr.ask(ApplyDeployment(Deployment(name="v", runtime="vllm")))
    with pytest.raises(RequestError, match="gpus"):
        await mgr.ask(ApplyDeployment(Deployment(name="x", runtime="transformers", gpus=2)))
    with pytest.raises(RequestError, match="fallbacks"):
        await mgr.ask(ApplyDeployment(Deployment(name="y", runtime="fake", fallbacks=("z",))))
    assert await mgr.ask(ListDeployments()) == ()


async def test_needs_a_coordinator(system: ActorSystem) -> None:
    mgr = system.actor_of(Props(DeploymentManagerActor), "mgr")
    await mgr.wait_stopped()  # cannot start without /user/dp


# -- helpers --------------------------------------------------------------------------------


async def _rows_of(dp: ActorRef, name: str) -> tuple[Any, ...]:
    return tuple((await dp.ask(GetRoutingTable())).deployments.get(name, ()))


async def _count(dp: ActorRef, name: str, n: int) -> bool:
    return len(await healthy_ids(dp, name)) == n


async def _rows(dp: ActorRef, name: str, n: int) -> bool:
    return len(await _rows_of(dp, name)) == n


async def _ids(dp: ActorRef, name: str, ids: list[str]) -> bool:
    rows = await _rows_of(dp, name)
    return sorted(r.replica_id for r in rows) == ids and all(
        r.state is ReplicaState.HEALTHY for r in rows
    )


async def _gone(dp: ActorRef, name: str) -> bool:
    return not await _rows_of(dp, name)


async def _state(mgr: ActorRef, name: str, state: str) -> dict[str, Any] | None:
    view = await status(mgr, name)
    return view if view["state"] == state else None


async def _moved(mgr: ActorRef, name: str) -> dict[str, Any] | None:
    view = await status(mgr, name)
    replica = view["replica_list"][0]
    return view if replica["moves"] == 1 and replica["phase"] == "running" else None


async def _event(mgr: ActorRef, name: str, event: str) -> dict[str, Any] | None:
    view = await status(mgr, name)
    events = [e["event"] for r in view["replica_list"] for e in r["history"]]
    return view if event in events else None


async def _send(system: ActorSystem, dp: ActorRef, name: str, text: str) -> None:
    from inference_runtime.cluster import Release, Route
    from inference_runtime.engine import AddRequest
    from inference_runtime.testing import RecordingSink
    from inference_runtime.types import ChatMessage, EngineRequest

    lease = await dp.ask(Route(name))
    request = EngineRequest(
        request_id=f"r-{text}-{id(lease)}",
        deployment=name,
        messages=(ChatMessage(role="user", content=text),),
    )
    with contextlib.suppress(Exception):
        await lease.engine.ask(AddRequest((request,), RecordingSink()))
    dp.tell(Release(name, lease.replica_id))


async def _poison(system: ActorSystem, dp: ActorRef, name: str) -> None:
    await _send(system, dp, name, "BOOM")


async def test_replicas_beyond_the_cap_or_what_the_nodes_hold_are_refused(
    system: ActorSystem,
) -> None:
    config = ManagerConfig(health_interval_s=0.05, max_replicas=8)
    _dp, mgr = start(system, nodes=[node(80, 80)], config=config)
    with pytest.raises(RequestError, match="max_replicas") as refused:
        await mgr.ask(ApplyDeployment(Deployment(name="many", runtime="fake", replicas=9)))
    assert refused.value.param == "replicas"
    await mgr.ask(ApplyDeployment(Deployment(name="ok", runtime="fake", replicas=1)))
    with pytest.raises(RequestError, match="max_replicas"):
        await mgr.ask(ScaleDeployment("ok", 10**9))
    # two GPUs hold two whole-GPU replicas, or 80 // 30 = 2 each by memory
    with pytest.raises(RequestError, match="at most 2") as refused:
        await mgr.ask(ApplyDeployment(Deployment(name="g", runtime="fake", replicas=3, gpus=1)))
    assert refused.value.param == "replicas"
    with pytest.raises(RequestError, match="at most 0"):
        await mgr.ask(ApplyDeployment(Deployment(name="g", runtime="fake", gpus=3)))
    shared = Deployment(name="s", runtime="fake", replicas=5, gpus=1, gpu_memory_gib=30)
    with pytest.raises(RequestError, match="at most 4"):
        await mgr.ask(ApplyDeployment(shared))
    assert [d.name for d in await mgr.ask(ListDeployments())] == ["ok"]


class GatedPlacement(DeploymentPlacementActor):
    """Places a replica only when the test lets one through (``gate``)."""

    def __init__(self, inventory: list[NodeInfo], gate: asyncio.Semaphore) -> None:
        super().__init__(lambda: inventory)
        self.gate = gate

    async def receive(self, message: Any) -> Any:
        if type(message).__name__ == "PlaceReplica":
            await self.gate.acquire()
        return super().receive(message)


async def test_a_scale_down_wins_over_a_scale_up_in_progress(system: ActorSystem) -> None:
    gate = asyncio.Semaphore(1)
    dp = system.actor_of(Props(DpCoordinatorActor), "dp")
    placement = system.actor_of(Props(lambda: GatedPlacement([node()], gate)))
    started: list[str] = []

    def factory(dep: Deployment, *, device: str) -> FakeRunner:
        started.append(dep.name)
        return FakeRunner(dep, device=device)

    mgr = system.actor_of(
        Props(
            lambda: DeploymentManagerActor(
                coordinator=dp, placement=placement, runner_factory=factory, config=FAST
            )
        ),
        "mgr",
    )
    await mgr.ask(ApplyDeployment(Deployment(name="w", runtime="fake")))
    await until(lambda: _count(dp, "w", 1))
    await mgr.ask(ScaleDeployment("w", 40))
    for _ in range(2):  # two more replicas are placed, then the count goes back to one
        gate.release()
    await until(lambda: _count(dp, "w", 3))
    await mgr.ask(ScaleDeployment("w", 1))
    for _ in range(40):
        gate.release()
    view = await until(lambda: _state(mgr, "w", "ready"), timeout=10)
    assert view["replicas"] == {"desired": 1, "ready": 1, "total": 1}
    assert len(started) <= 4  # the three, and at most the one being placed when it shrank
