"""``RayBackend``: the runtime on a Ray cluster: connect, read the inventory, launch replicas."""

from __future__ import annotations

import logging
import os
import socket
import uuid
from typing import Any

import ray

from inference_runtime.actors import ActorRef, ActorSystem, Props
from inference_runtime.cluster.inventory import NodeInfo
from inference_runtime.cluster.launcher import RunnerFactory, mailbox_capacity
from inference_runtime.cluster.placement import Placement
from inference_runtime.cluster.ray.host import EngineHost
from inference_runtime.cluster.ray.inventory import nodes_from_ray
from inference_runtime.cluster.ray.shell import RayReplicaActor
from inference_runtime.cluster.ray.sync import BoardSyncActor
from inference_runtime.config import ClusterConfig
from inference_runtime.types import Deployment

log = logging.getLogger("inference_runtime.cluster.ray")


class RayLauncher:
    """Launches each replica as a ``RayReplicaActor`` (the proxy, here) over an ``EngineHost``
    (the engine, in a Ray actor in a placement group on the chosen node). The runner factory
    is not used: the host builds its runner on its own node."""

    def __init__(self, config: ClusterConfig, host_class: Any) -> None:
        self.config = config
        self.host_class = host_class
        # what each bundle reserves, so that placement counts it (see RayReplicaActor._launch)
        self.replica_cpus = config.replica_cpus or 0.01

    def props(
        self,
        deployment: Deployment,
        replica_id: str,
        placement: Placement,
        *,
        coordinator: ActorRef | None,
        runner_factory: RunnerFactory,
    ) -> Props:
        config, host_class = self.config, self.host_class
        return Props(
            lambda: RayReplicaActor(
                deployment,
                replica_id,
                placement,
                coordinator=coordinator,
                options=config,
                host_class=host_class,
            ),
            mailbox_capacity=mailbox_capacity(deployment),
        )


class RayBackend:
    """Joins the cluster (``ray.init``) unless this process is connected already; then only
    what it started is shut down by :meth:`close`."""

    def __init__(self, config: ClusterConfig) -> None:
        self.config = config
        self.owned = False
        self.host_class: Any = None

    def connect(self) -> None:
        if not ray.is_initialized():
            ray.init(address=self.config.address, namespace=self.config.namespace)
            self.owned = True
        self.host_class = ray.remote(EngineHost)
        log.info("Ray cluster: %d node(s) can take replicas", len(self.inventory()))

    def inventory(self) -> list[NodeInfo]:
        return nodes_from_ray(ray.nodes(), min_cpus=self.config.replica_cpus)

    def launcher(self) -> RayLauncher:
        if self.host_class is None:
            raise RuntimeError("RayBackend.connect() first")
        return RayLauncher(self.config, self.host_class)

    def spawn_sync(
        self,
        system: ActorSystem,
        *,
        coordinator: ActorRef,
        manager: ActorRef | None,
        metrics: ActorRef | None,
    ) -> ActorRef:
        """This runtime's link to the routing board (``/user/board``): the head's (with its
        ``manager``) publishes the catalog and the replicas; a gateway's follows them."""
        config = self.config
        writer = f"{config.role}@{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        return system.actor_of(
            Props(
                lambda: BoardSyncActor(
                    writer=writer,
                    coordinator=coordinator,
                    options=config,
                    manager=manager,
                    metrics=metrics,
                )
            ),
            "board",
        )

    def close(self) -> None:
        if self.owned and ray.is_initialized():
            ray.shutdown()
        self.owned = False
