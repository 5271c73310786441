"""``Follower``: a gateway-only runtime follows the head's catalog and replicas from the board.

For every replica the head placed, the gateway runs its own proxy (``RayReplicaActor`` attached
to the replica's host actor by name): its requests go straight to the engine's Ray actor, and
its coordinator gets the engine's load reports from the host's ``events`` stream, as the head's
does. A replica the head re-places (a new host) gets a new proxy, registered under the same id
(its in-flight count carries over); a replica the head removed is deregistered and its proxy
stopped (which leaves the host alone). The catalog goes to the gateway (``CatalogChanged``: the
models it serves, their fallbacks and limits) and to the metrics actor (prices, budgets).

Plain code run by the sync actor (``sync.BoardSyncActor``), on its task, with its context.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any

from inference_runtime.actors import ActorContext, ActorRef, Props
from inference_runtime.cluster.launcher import mailbox_capacity
from inference_runtime.cluster.manager import CatalogChanged
from inference_runtime.cluster.messages import (
    DeregisterReplica,
    RegisterReplica,
    ReplicaKey,
    SharedReplica,
)
from inference_runtime.cluster.placement import Placement
from inference_runtime.cluster.ray.shell import RayReplicaActor
from inference_runtime.cluster.sharing import BoardView
from inference_runtime.config import ClusterConfig
from inference_runtime.errors import InferenceRuntimeError
from inference_runtime.metrics import ConfigureDeployment, RemoveDeployment
from inference_runtime.types import Deployment

log = logging.getLogger("inference_runtime.cluster.ray")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.:@+=~-]")


class Follower:
    def __init__(
        self,
        context: ActorContext,
        *,
        coordinator: ActorRef,
        metrics: ActorRef | None,
        options: ClusterConfig,
        proxy: Callable[[Deployment, SharedReplica], Props] | None = None,
    ) -> None:
        """``proxy``: the props of a replica's proxy (default: a ``RayReplicaActor`` attached
        to its host; tests give a stand-in)."""
        self.context = context
        self.proxy = proxy or self._props
        self.coordinator = coordinator
        self.metrics = metrics
        self.options = options
        self.specs: dict[str, dict[str, Any]] = {}
        self.deployments: dict[str, Deployment] = {}
        self.attached: dict[ReplicaKey, tuple[str, ActorRef]] = {}
        self.subscribers: set[ActorRef] = set()
        self.started = itertools.count()

    def subscribe(self, subscriber: ActorRef) -> None:
        self.subscribers.add(subscriber)
        subscriber.tell(CatalogChanged(dict(self.deployments)))

    def follow(self, view: BoardView) -> None:
        if view.catalog != self.specs:
            self._catalog(view.catalog)
        self._replicas(view.replicas)

    def forget(self, proxy: ActorRef) -> None:
        """A proxy failed as an actor (a bug): attach again at the next sync."""
        for key, (_, ref) in list(self.attached.items()):
            if ref == proxy:
                del self.attached[key]

    def _catalog(self, specs: Mapping[str, dict[str, Any]]) -> None:
        for name, spec in specs.items():
            if self.specs.get(name) == spec:
                continue
            try:
                deployment = Deployment.from_dict(spec)
            except (ValueError, TypeError) as error:  # a newer head's spec: skip, say why
                log.error("deployment %s from the head cannot be read here: %s", name, error)
                continue
            self.deployments[name] = deployment
            if self.metrics is not None:
                self.metrics.tell(ConfigureDeployment(deployment))
        for name in [n for n in self.deployments if n not in specs]:
            del self.deployments[name]
            if self.metrics is not None:
                self.metrics.tell(RemoveDeployment(name))
        self.specs = dict(specs)
        catalog = CatalogChanged(dict(self.deployments))
        for subscriber in self.subscribers:
            subscriber.tell(catalog)

    def _replicas(self, replicas: Mapping[ReplicaKey, SharedReplica]) -> None:
        for key, replica in replicas.items():
            current = self.attached.get(key)
            if current is not None and current[0] == replica.host:
                continue
            deployment = self.deployments.get(replica.deployment)
            if deployment is None:
                continue  # its spec is not here yet
            proxy = self.context.spawn(self.proxy(deployment, replica), self._name(replica))
            self.coordinator.tell(
                RegisterReplica(
                    replica.deployment,
                    replica.replica_id,
                    proxy,
                    routing=replica.routing,
                    max_concurrent=replica.max_concurrent,
                )
            )
            self.attached[key] = (replica.host, proxy)
            if current is not None:  # registered again first: the count carried over
                self._stop(current[1])
            log.info("replica %s: attached to %s", replica.replica_id, replica.host)
        for key in [k for k in self.attached if k not in replicas]:
            _, proxy = self.attached.pop(key)
            self.coordinator.tell(DeregisterReplica(*key))
            self._stop(proxy)

    def _props(self, deployment: Deployment, replica: SharedReplica) -> Props:
        coordinator, options, host = self.coordinator, self.options, replica.host
        return Props(
            lambda: RayReplicaActor(
                deployment,
                replica.replica_id,
                Placement("", ()),
                coordinator=coordinator,
                options=options,
                host_class=None,
                attach=host,
            ),
            mailbox_capacity=mailbox_capacity(deployment),
        )

    def _name(self, replica: SharedReplica) -> str:
        return f"{_UNSAFE.sub('_', replica.replica_id)}-{next(self.started)}"

    def _stop(self, proxy: ActorRef) -> None:
        with contextlib.suppress(InferenceRuntimeError, ValueError):
            self.context.stop(proxy)

    def stop_all(self) -> None:
        for _, proxy in self.attached.values():
            self._stop(proxy)
        self.attached.clear()


__all__ = ["Follower"]
