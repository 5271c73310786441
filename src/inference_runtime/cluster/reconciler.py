"""Reconciliation: drive a deployment's replicas toward its spec, one deployment at a time.

One pass (``_converge``), under the deployment's lock so that changes are applied in order:

1. repair: failed or unplaced replicas of the current spec are placed and started again
   (after their backoff), on other GPUs when there are any;
2. grow: replicas are added until the count reaches the spec (old-spec replicas count while
   they still serve, so an update does not double the fleet);
3. roll: each replica of an old spec is replaced one at a time: a new one is started and must
   become healthy before the old one is drained and stopped;
4. shrink: extra replicas are drained (no new requests, the admitted ones finish, bounded by
   ``drain_timeout_s``) and stopped.

A deleted deployment's replicas are all drained and stopped. The manager actor owns this object
and calls it from its own event loop only.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from inference_runtime.actors import ActorRef, Props
from inference_runtime.cluster.messages import (
    DeregisterReplica,
    GetRoutingTable,
    RegisterReplica,
    RoutingTableSnapshot,
    SetReplicaState,
)
from inference_runtime.cluster.placement import Placement, PlaceReplica, ReleaseReplica
from inference_runtime.cluster.replicas import Phase, ReplicaRecord, shape
from inference_runtime.errors import InferenceRuntimeError, PlacementFailed
from inference_runtime.metrics import RemoveDeployment
from inference_runtime.types import Deployment, ReplicaState

if TYPE_CHECKING:
    from inference_runtime.cluster.manager import DeploymentManagerActor

log = logging.getLogger("inference_runtime.cluster")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.:@+=~-]")
_POLL_S = 0.02
_UNPLACED_RETRY_S = 5.0
_MAX_BACKOFF_S = 60.0


class Reconciler:
    def __init__(self, manager: DeploymentManagerActor) -> None:
        self.m = manager
        self.by_name: dict[str, dict[str, ReplicaRecord]] = {}
        self.counters: dict[str, int] = {}
        self.locks: dict[str, asyncio.Lock] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.again: set[str] = set()
        self.timers: list[asyncio.TimerHandle] = []
        self.closed = False

    # -- records ---------------------------------------------------------------------------

    def records(self, name: str) -> list[ReplicaRecord]:
        return list(self.by_name.get(name, {}).values())

    def running(self) -> list[ReplicaRecord]:
        return [r for rs in self.by_name.values() for r in rs.values() if r.phase is Phase.RUNNING]

    def find(self, ref: ActorRef | None, replica_id: str | None) -> ReplicaRecord | None:
        for records in self.by_name.values():
            for record in records.values():
                if ref is not None and record.engine == ref:
                    return record
                if ref is None and record.replica_id == replica_id:
                    return record
        return None

    def target_ids(self, name: str) -> tuple[str, ...]:
        stored = self.m.desired.get(name)
        if stored is None:
            return ()
        spec = shape(stored.deployment)
        return tuple(
            r.replica_id
            for r in self.records(name)
            if r.spec == spec and r.phase is not Phase.DRAINING
        )

    # -- scheduling ------------------------------------------------------------------------

    def kick(self, name: str) -> None:
        """Converge ``name`` soon (again, if a pass is running now)."""
        if self.closed:
            return
        task = self.tasks.get(name)
        if task is not None and not task.done():
            self.again.add(name)
            return
        self.tasks[name] = asyncio.get_running_loop().create_task(
            self._run(name), name=f"reconcile:{name}"
        )

    def kick_later(self, name: str, delay: float) -> None:
        if not self.closed:
            handle = asyncio.get_running_loop().call_later(delay, self.kick, name)
            self.timers.append(handle)
            self.timers = [t for t in self.timers if not t.cancelled()][-256:]

    def spawn_task(self, coro: Coroutine[Any, Any, None], key: str) -> None:
        """Run ``coro`` in the background unless a task with ``key`` still runs."""
        task = self.tasks.get(key)
        if self.closed or (task is not None and not task.done()):
            coro.close()
            return
        self.tasks[key] = asyncio.get_running_loop().create_task(coro, name=key)

    async def start_now(self, name: str) -> None:
        """Place and start what a new deployment needs now (no waiting on drains), then let a
        background pass do the rest."""
        lock = self._lock(name)
        if not lock.locked():
            async with lock:
                await self._grow(name)
        self.kick(name)

    async def close(self) -> None:
        self.closed = True
        for handle in self.timers:
            handle.cancel()
        tasks = [t for t in self.tasks.values() if not t.done()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def _lock(self, name: str) -> asyncio.Lock:
        return self.locks.setdefault(name, asyncio.Lock())

    async def _run(self, name: str) -> None:
        while True:
            self.again.discard(name)
            try:
                async with self._lock(name):
                    await self._converge(name)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug here must not stop the manager; try again later
                log.exception("reconciling deployment %s failed", name)
                self.kick_later(name, _UNPLACED_RETRY_S)
                return
            if name not in self.again:
                return

    # -- the pass --------------------------------------------------------------------------

    async def _converge(self, name: str) -> None:
        stored = self.m.desired.get(name)
        if stored is None:
            await self._remove_all(name)
            return
        await self._grow(name)
        await self._roll(name)
        await self._shrink(name)

    def _split(self, name: str) -> tuple[Deployment, list[ReplicaRecord], list[ReplicaRecord]]:
        dep = self.m.desired[name].deployment
        spec = shape(dep)
        live = [r for r in self.records(name) if r.phase is not Phase.DRAINING]
        return dep, [r for r in live if r.spec == spec], [r for r in live if r.spec != spec]

    async def _grow(self, name: str) -> None:
        if name not in self.m.desired:
            return
        dep, new, old = self._split(name)
        now = self.m.context.system.clock.now()
        for record in old:  # an old-spec replica that serves nothing is not worth rolling
            if record.phase is not Phase.RUNNING:
                await self._retire(record, drain=False)
                old.remove(record)
        for record in new:
            if record.phase in (Phase.FAILED, Phase.PENDING):
                if now >= record.not_before:
                    await self._start(record)
                else:
                    self.kick_later(name, record.not_before - now)
        # the spec is read again after every start: a scale-down meanwhile wins at once, and
        # a changed spec ends this growth (the next pass grows the new one)
        while (
            self._still(name, dep)
            and len(new) + len(old) < self.m.desired[name].deployment.replicas
        ):
            record = self._new_record(dep)
            new.append(record)
            await self._start(record)

    def _still(self, name: str, dep: Deployment) -> bool:
        """``name`` still wants replicas of ``dep``'s shape (its count may have changed)."""
        stored = self.m.desired.get(name)
        return stored is not None and (
            stored.deployment is dep or shape(stored.deployment) == shape(dep)
        )

    async def _roll(self, name: str) -> None:
        dep, new, old = self._split(name)
        for record in sorted(old, key=_number):
            if len([r for r in new if r.phase is Phase.RUNNING]) < dep.replicas:
                fresh = self._new_record(dep)
                new.append(fresh)
                if not await self._start(fresh) or not await self._wait_ready(fresh):
                    self.m.messages[name] = (
                        f"rolling update stopped: replica {fresh.replica_id} did not become "
                        f"healthy ({fresh.last_error or 'timeout'}); the old replicas keep serving"
                    )
                    return
            await self._retire(record, drain=True)

    async def _shrink(self, name: str) -> None:
        dep, new, _ = self._split(name)
        extra = len(new) - dep.replicas
        if extra <= 0:
            return
        # the ones that serve nothing go first, then the newest
        order = sorted(new, key=lambda r: (r.phase is Phase.RUNNING, -_number(r)))
        victims = sorted(order[:extra], key=_number)
        await asyncio.gather(*(self._retire(r, drain=True) for r in victims))

    async def _remove_all(self, name: str) -> None:
        await asyncio.gather(*(self._retire(r, drain=True) for r in self.records(name)))
        if name not in self.m.desired:
            self.by_name.pop(name, None)
            self.m.messages.pop(name, None)
            if self.m.metrics is not None:
                self.m.metrics.tell(RemoveDeployment(name))

    # -- one replica -----------------------------------------------------------------------

    def _new_record(self, dep: Deployment) -> ReplicaRecord:
        number = self.counters.get(dep.name, 0)
        self.counters[dep.name] = number + 1
        record = ReplicaRecord(f"{dep.name}#{number}", dep.name, shape(dep))
        self.by_name.setdefault(dep.name, {})[record.replica_id] = record
        record.event("created")
        return record

    async def _start(self, record: ReplicaRecord) -> bool:
        """Place and start the replica's engine; False when it cannot be placed now."""
        spec, m = record.spec, self.m
        avoid: tuple[tuple[str, int], ...] = ()
        if record.last_placement is not None:
            node = record.last_placement.node_id
            avoid = tuple((node, i) for i in record.last_placement.gpu_indices)
        assert m.placement is not None
        assert m.coordinator is not None
        try:
            placement: Placement = await m.placement.ask(
                PlaceReplica(
                    record.replica_id,
                    spec.name,
                    spec.gpus,
                    spec.gpu_memory_gib,
                    avoid,
                    cpus=getattr(m.launcher, "replica_cpus", 0.0),
                )
            )
        except PlacementFailed as error:
            record.phase, record.last_error = Phase.PENDING, str(error)
            record.event("unplaced", str(error))
            m.messages[spec.name] = f"replica {record.replica_id} cannot be placed: {error}"
            log.warning("deployment %s: %s", spec.name, m.messages[spec.name])
            self.kick_later(spec.name, _UNPLACED_RETRY_S)
            return False
        if record.last_placement is not None and record.last_placement != placement:
            record.moves += 1
            record.event("moved", f"{record.last_placement.describe()} -> {placement.describe()}")
        record.placement = placement
        record.started += 1
        engine = m.context.spawn(self._engine_props(record, placement), self._actor_name(record))
        record.engine, record.phase = engine, Phase.RUNNING
        m.coordinator.tell(
            RegisterReplica(
                spec.name,
                record.replica_id,
                engine,
                routing=spec.routing,
                max_concurrent=spec.serving.max_concurrent,
            )
        )
        record.event("started", placement.describe())
        if (m.messages.get(spec.name) or "").startswith(f"replica {record.replica_id} "):
            m.messages[spec.name] = None
        return True

    def _engine_props(self, record: ReplicaRecord, placement: Placement) -> Props:
        return self.m.launcher.props(
            record.spec,
            record.replica_id,
            placement,
            coordinator=self.m.coordinator,
            runner_factory=self.m.runner_factory,
        )

    def _actor_name(self, record: ReplicaRecord) -> str:
        return f"{_UNSAFE.sub('_', record.replica_id)}-{record.started}"

    async def _wait_ready(self, record: ReplicaRecord) -> bool:
        deadline = self.m.context.system.clock.now() + self.m.config.ready_timeout_s
        while self.m.context.system.clock.now() < deadline:
            if record.phase is not Phase.RUNNING:
                return False
            row = (await self.routing_table()).replica(record.deployment, record.replica_id)
            if row is not None and row.state is ReplicaState.HEALTHY:
                record.event("healthy")
                return True
            await asyncio.sleep(_POLL_S)
        record.last_error = f"not healthy within {self.m.config.ready_timeout_s:g} s"
        return False

    def mark_failed(self, record: ReplicaRecord, reason: str, *, hung: bool = False) -> None:
        """Supervision (or the health check) took the replica out: stop it, free its place,
        and re-place it after a backoff."""
        m = self.m
        record.failures += 1
        record.failures_in_a_row += 1
        record.last_error = reason
        record.event("hung" if hung else "failed", reason)
        self._stop_engine(record, state=ReplicaState.FAILED, reason=reason)
        record.phase = Phase.FAILED
        backoff = min(
            _MAX_BACKOFF_S, m.config.replace_backoff_s * 2 ** (record.failures_in_a_row - 1)
        )
        record.not_before = m.context.system.clock.now() + backoff
        self.kick_later(record.deployment, backoff)

    def _stop_engine(self, record: ReplicaRecord, *, state: ReplicaState, reason: str) -> None:
        m = self.m
        assert m.coordinator is not None
        assert m.placement is not None
        if record.engine is not None:
            m.coordinator.tell(SetReplicaState(record.deployment, record.replica_id, state, reason))
            with contextlib.suppress(InferenceRuntimeError, ValueError):
                m.context.stop(record.engine)
            record.engine = None
        if record.placement is not None:
            record.last_placement = record.placement
            record.placement = None
            m.placement.tell(ReleaseReplica(record.replica_id))
        m.watch.forget(record.replica_id)

    async def _retire(self, record: ReplicaRecord, *, drain: bool) -> None:
        """Drain (bounded), stop and forget a replica."""
        m = self.m
        assert m.coordinator is not None
        if drain and record.phase is Phase.RUNNING:
            record.phase = Phase.DRAINING
            record.event("draining")
            m.coordinator.tell(
                SetReplicaState(record.deployment, record.replica_id, ReplicaState.DRAINING)
            )
            await self._drained(record)
        self._stop_engine(record, state=ReplicaState.DRAINING, reason="stopped")
        m.coordinator.tell(DeregisterReplica(record.deployment, record.replica_id))
        record.event("stopped")
        self.by_name.get(record.deployment, {}).pop(record.replica_id, None)

    async def _drained(self, record: ReplicaRecord) -> None:
        clock = self.m.context.system.clock
        deadline = clock.now() + self.m.config.drain_timeout_s
        while clock.now() < deadline:
            row = (await self.routing_table()).replica(record.deployment, record.replica_id)
            if row is None or row.in_flight == 0:
                return
            await asyncio.sleep(_POLL_S * 5)
        log.warning("replica %s: drain timed out; stopping it", record.replica_id)

    async def routing_table(self) -> RoutingTableSnapshot:
        assert self.m.coordinator is not None
        table: RoutingTableSnapshot = await self.m.coordinator.ask(GetRoutingTable(), timeout=10)
        return table

    # -- views -----------------------------------------------------------------------------

    def view(self, name: str, table: RoutingTableSnapshot) -> dict[str, Any]:
        stored = self.m.desired[name]
        dep = stored.deployment
        spec = shape(dep)
        records = sorted(self.records(name), key=_number)
        rows = {r.replica_id: r for r in table.deployments.get(name, ())}
        ready = sum(
            1
            for r in records
            if r.spec == spec
            and r.phase is Phase.RUNNING
            and getattr(rows.get(r.replica_id), "state", None) is ReplicaState.HEALTHY
        )
        busy = self.tasks.get(name)
        settled = len(records) == dep.replicas and all(r.spec == spec for r in records)
        if ready == dep.replicas and settled:
            state = "ready"
        elif any(r.phase in (Phase.FAILED, Phase.PENDING) for r in records):
            state = "degraded"
        elif (busy is not None and not busy.done()) or not settled or ready < dep.replicas:
            state = "progressing"
        else:
            state = "ready"
        return {
            "name": name,
            "runtime": dep.runtime,
            "model": dep.model_id,
            "source": stored.source,
            "revision": stored.revision,
            "updated_at": stored.updated_at,
            "state": state,
            "message": self.m.messages.get(name),
            "replicas": {"desired": dep.replicas, "ready": ready, "total": len(records)},
            "replica_list": [
                {**r.view(rows.get(r.replica_id)), "current": r.spec == spec} for r in records
            ],
            "spec": dep.to_dict(),
        }


def _number(record: ReplicaRecord) -> int:
    return int(record.replica_id.rsplit("#", 1)[1])
