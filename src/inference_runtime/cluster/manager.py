"""``DeploymentManagerActor``: the catalog of deployments, turned into running replicas.

Each replica is an ``EngineCoreActor`` child, registered with the coordinator; metrics learn each
deployment's pricing and budget. Subscribers (the gateway) get the catalog on every change.
The catalog lives in memory for now; persistence and placement come with the control plane.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

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
from inference_runtime.cluster.messages import DeregisterReplica, RegisterReplica, SetReplicaState
from inference_runtime.engine import ModelRunner, create_runner
from inference_runtime.engine.runtimes import RUNNERS, engine_actor_class
from inference_runtime.errors import InferenceRuntimeError, NotFound, RequestError
from inference_runtime.metrics import ConfigureDeployment, RemoveDeployment
from inference_runtime.types import Deployment, ReplicaState

log = logging.getLogger("inference_runtime.cluster")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.:@+=~-]")

RunnerFactory = Callable[[Deployment], ModelRunner]


@dataclass(frozen=True, slots=True)
class ApplyDeployment:
    """Create or update a deployment (ask); answers the list of its replica ids."""

    deployment: Deployment


@dataclass(frozen=True, slots=True)
class DeleteDeployment:
    name: str


@dataclass(frozen=True, slots=True)
class ListDeployments:
    pass


@dataclass(frozen=True, slots=True)
class WatchCatalog:
    """Send ``CatalogChanged`` to ``subscriber`` now and after every change."""

    subscriber: ActorRef


@dataclass(frozen=True, slots=True)
class CatalogChanged:
    deployments: Mapping[str, Deployment]


@dataclass
class _Running:
    deployment: Deployment
    generation: int
    replicas: dict[str, ActorRef] = field(default_factory=dict)


class DeploymentManagerActor(Actor):
    replied_errors = (InferenceRuntimeError,)

    def __init__(
        self,
        *,
        coordinator: ActorRef | None = None,
        metrics: ActorRef | None = None,
        runner_factory: RunnerFactory = create_runner,
    ) -> None:
        self.coordinator = coordinator
        self.metrics = metrics
        self.runner_factory = runner_factory
        self.running: dict[str, _Running] = {}
        self.subscribers: set[ActorRef] = set()
        self.generations = 0

    def pre_start(self) -> None:
        system = self.context.system
        self.coordinator = self.coordinator or system.child("dp")
        self.metrics = self.metrics or system.child("metrics")
        if self.coordinator is None:
            raise RuntimeError("DeploymentManagerActor needs a coordinator (an actor at /user/dp)")

    def supervisor_strategy(self) -> SupervisorStrategy:
        return OneForOneStrategy(decider=lambda error: Directive.STOP)

    def receive(self, message: Any) -> Any:
        match message:
            case ApplyDeployment(deployment=deployment):
                return self._apply(deployment)
            case DeleteDeployment(name=name):
                self._delete(name)
            case ListDeployments():
                return tuple(r.deployment for r in self.running.values())
            case WatchCatalog(subscriber=subscriber):
                self.subscribers.add(subscriber)
                self.context.watch(subscriber)
                subscriber.tell(self._catalog())
            case ChildFailed(ref=ref, error=error):
                self._replica_failed(ref, error)
            case Terminated(ref=ref):
                self.subscribers.discard(ref)
        return None

    def _apply(self, deployment: Deployment) -> tuple[str, ...]:
        if deployment.runtime not in RUNNERS:
            raise RequestError(
                f"runtime: {deployment.runtime!r} is not available in this version "
                f"(available: {', '.join(RUNNERS)})",
                param="runtime",
            )
        if deployment.gpus:
            # refused rather than ignored: placement on GPUs arrives with the control plane
            raise RequestError(
                "gpus: GPU placement is not available in this version; set gpus: 0",
                param="gpus",
            )
        current = self.running.get(deployment.name)
        if current is not None and current.deployment == deployment:
            return tuple(current.replicas)
        if current is not None:
            self._stop_replicas(current)
        self.generations += 1
        running = _Running(deployment, self.generations)
        for index in range(deployment.replicas):
            self._spawn_replica(running, index)
        self.running[deployment.name] = running
        if self.metrics is not None:
            self.metrics.tell(ConfigureDeployment(deployment))
        self._publish()
        return tuple(running.replicas)

    def _spawn_replica(self, running: _Running, index: int) -> None:
        dep = running.deployment
        replica_id = f"{dep.name}#{index}"
        name = f"{_UNSAFE.sub('_', dep.name)}-g{running.generation}-{index}"
        factory = self.runner_factory
        engine_class = engine_actor_class(dep.runtime)
        # every admitted sequence may have an add and an abort queued at once
        capacity = 2 * (dep.serving.max_concurrent + dep.serving.queue_capacity) + 64
        engine = self.context.spawn(
            Props(
                lambda: engine_class(
                    dep,
                    replica_id,
                    coordinator=self.coordinator,
                    runner_factory=lambda: factory(dep),
                ),
                mailbox_capacity=capacity,
            ),
            name,
        )
        running.replicas[replica_id] = engine
        assert self.coordinator is not None
        self.coordinator.tell(
            RegisterReplica(
                dep.name,
                replica_id,
                engine,
                routing=dep.routing,
                max_concurrent=dep.serving.max_concurrent,
            )
        )

    def _stop_replicas(self, running: _Running) -> None:
        assert self.coordinator is not None
        for replica_id, engine in running.replicas.items():
            self.coordinator.tell(DeregisterReplica(running.deployment.name, replica_id))
            self.context.stop(engine)
        running.replicas.clear()

    def _delete(self, name: str) -> None:
        running = self.running.pop(name, None)
        if running is None:
            raise NotFound(f"deployment {name!r} does not exist")
        self._stop_replicas(running)
        if self.metrics is not None:
            self.metrics.tell(RemoveDeployment(name))
        self._publish()

    def _replica_failed(self, ref: ActorRef, error: BaseException) -> None:
        for running in self.running.values():
            for replica_id, engine in running.replicas.items():
                if engine == ref:
                    log.error("replica %s stopped: %r", replica_id, error)
                    assert self.coordinator is not None
                    self.coordinator.tell(
                        SetReplicaState(
                            running.deployment.name, replica_id, ReplicaState.FAILED, repr(error)
                        )
                    )
                    return

    def _catalog(self) -> CatalogChanged:
        return CatalogChanged({name: r.deployment for name, r in self.running.items()})

    def _publish(self) -> None:
        catalog = self._catalog()
        for subscriber in self.subscribers:
            subscriber.tell(catalog)
