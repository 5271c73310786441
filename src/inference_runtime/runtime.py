"""``Runtime``: the whole topology built from a config, started and stopped as one.

It is the seed's canonical wiring (coordinator, placement, manager, metrics, gateway) over the
state database (the catalog and the spend ledger), the deployments of the config file, and a
graceful stop: stop accepting, drain in-flight requests (bounded), then stop every actor,
children before parents.
"""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import os
import signal
import socket
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from inference_runtime.actors import ActorRef, ActorSystem, Props
from inference_runtime.cluster import (
    DeploymentManagerActor,
    DeploymentPlacementActor,
    DpCoordinatorActor,
    GetDeploymentStatus,
    ListDeployments,
    NodeInfo,
    WatchCatalog,
    probe_local_node,
)
from inference_runtime.cluster.manager import check_deployment, check_replicas
from inference_runtime.cluster.messages import WaitSynced
from inference_runtime.cluster.shared_table import SharedRoutingTable
from inference_runtime.config import RuntimeConfig, read_environment
from inference_runtime.errors import InferenceRuntimeError, RequestError
from inference_runtime.gateway import Drain, GetAddress, spawn_gateway
from inference_runtime.gateway.auth import Authenticator
from inference_runtime.metrics import BudgetLedger, MetricsActor
from inference_runtime.storage import CatalogStore, SqliteSpendStore, open_database

log = logging.getLogger("inference_runtime")
COORDINATOR_MAILBOX = 65_536
METRICS_MAILBOX = 65_536


GC_YOUNG_THRESHOLD = 20_000
"""Allocations between young-generation collections in a serving process (CPython's default is
700). Each request leaves a few dozen objects that only the cycle collector frees; at thousands
of requests a second the default makes collections 15-20 % of the gateway's CPU (measured with
``gc.callbacks`` under bench/proxy.py's load). Raising it trades a little memory for that."""


def tune_garbage_collector() -> None:
    """For a long-running server, once everything is loaded: move what start-up built (modules,
    weights' Python objects, the topology) out of the collector's way (``gc.freeze``), and
    collect young objects less often."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def check_address_free(host: str, port: int) -> None:
    """Raise ``OSError(EADDRINUSE, "HOST:PORT is already in use")`` when something listens on
    the gateway's address: checked first, so that a second ``serve`` on a taken port says so at
    once instead of after loading every model. Port 0 (any free one) is always free."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror:
        return  # the gateway's own bind reports a host that does not resolve
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as probe:
            # as the gateway binds: a port left in TIME_WAIT by a stopped server is free
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as error:
                shown = f"[{host}]" if ":" in host else host
                if error.errno == errno.EADDRINUSE:
                    raise OSError(errno.EADDRINUSE, f"{shown}:{port} is already in use") from None
                # not an address of this machine, or not ours (a privileged port): the gateway
                # would fail the same way, after the models loaded
                raise OSError(
                    error.errno, f"cannot listen on {shown}:{port}: {error.strerror}"
                ) from None


def state_path(config: RuntimeConfig) -> str:
    """The state database: ``storage.path``, else ``state.db`` in the data folder."""
    if config.storage.path:
        return os.path.expanduser(config.storage.path)
    return os.path.join(read_environment().data_dir, "state.db")


class Runtime:
    """``inventory``: the nodes placement may use (default: this machine, probed; with
    ``cluster.backend: ray``, the Ray cluster's live nodes)."""

    def __init__(
        self,
        config: RuntimeConfig,
        *,
        name: str = "inference",
        inventory: Callable[[], Sequence[NodeInfo]] | None = None,
    ) -> None:
        self.config = config
        self.name = name
        self.inventory = inventory
        self.backend: Any = None
        """The Ray backend (``cluster.ray.RayBackend``) when ``cluster.backend`` is ray."""
        self.system: ActorSystem | None = None
        self.gateway: ActorRef | None = None
        self.manager: ActorRef | None = None
        self.address: tuple[str, int] | None = None
        self.database: sqlite3.Connection | None = None

    async def start(self) -> tuple[str, int]:
        """Open the state, build the topology (restoring the catalog, applying the config's
        deployments), listen; returns (host, port)."""
        config = self.config
        check_address_free(config.gateway.host, config.gateway.port)
        gateway_only = config.cluster.role == "gateway"
        if gateway_only and config.deployments:
            log.info("a gateway serves the head's deployments: those of the config are ignored")
        for deployment in () if gateway_only else config.deployments:
            try:
                check_replicas(deployment, config.manager)
                check_deployment(deployment, local=config.cluster.backend != "ray")
            except RequestError as error:
                raise ValueError(f"deployments[{deployment.name}].{error}") from None
        # refuse a bad auth setup (a key file missing, an open non-loopback bind) before
        # anything starts; the gateway builds its own when it listens
        Authenticator(config.auth, host=config.gateway.host, clock=lambda: 0.0)
        launcher = None
        inventory = self.inventory or (lambda: [probe_local_node()])
        if config.cluster.backend == "ray":
            try:
                from inference_runtime.cluster.ray import RayBackend
            except ImportError as error:
                raise ValueError(
                    "cluster.backend: ray needs Ray installed "
                    f"(pip install 'inference-runtime[ray]'): {error}"
                ) from None
            self.backend = RayBackend(config.cluster)
            self.backend.connect()
            inventory = self.inventory or self.backend.inventory
            launcher = self.backend.launcher()
        live = self.backend is not None
        self.database = open_database(state_path(config))
        system = self.system = ActorSystem.create(self.name)
        clock = system.clock
        ledger = BudgetLedger(clock.now, SqliteSpendStore(self.database, now=clock.now))
        store = CatalogStore(self.database)
        try:
            # one route ask and one release per request, plus load reports: a deep mailbox
            dp = system.actor_of(
                Props.create(self._coordinator(), mailbox_capacity=COORDINATOR_MAILBOX), "dp"
            )
            metrics = system.actor_of(
                Props.create(lambda: MetricsActor(ledger=ledger), mailbox_capacity=METRICS_MAILBOX),
                "metrics",
            )
            if not gateway_only:
                placement = system.actor_of(
                    Props.create(lambda: DeploymentPlacementActor(inventory, live=live)),
                    "placement",
                )
                self.manager = system.actor_of(
                    Props.create(
                        lambda: DeploymentManagerActor(
                            coordinator=dp,
                            metrics=metrics,
                            placement=placement,
                            store=store,
                            initial=config.deployments,
                            config=config.manager,
                            launcher=launcher,
                            secret_env_allow=config.auth.secret_env_allow,
                        )
                    ),
                    "mgr",
                )
                await self.manager.ask(ListDeployments())  # restored; replicas start meanwhile
            board = None
            if self.backend is not None:
                board = self.backend.spawn_sync(
                    system, coordinator=dp, manager=self.manager, metrics=metrics
                )
            if gateway_only:
                assert board is not None
                # the head's catalog and replicas are known before we listen
                await board.ask(WaitSynced(), timeout=config.cluster.call_timeout_s)
            self.gateway = spawn_gateway(system, config.gateway, dp, auth=config.auth)
            if gateway_only:
                assert board is not None
                board.tell(WatchCatalog(self.gateway))
            self.address = await self.gateway.ask(GetAddress())
        except BaseException:
            await system.shutdown()
            self._close_database()
            self._close_backend()
            raise
        return self.address

    def _coordinator(self) -> Callable[[], DpCoordinatorActor]:
        """A coordinator with a plain table in one process; on Ray, a table shared with the
        other gateways (created once: it outlives a restart of the coordinator), whose drains
        on the head wait for every gateway."""
        if self.backend is None:
            return lambda: DpCoordinatorActor()
        table = SharedRoutingTable(drain_barrier=self.config.cluster.role == "head")
        return lambda: DpCoordinatorActor(table)

    def _close_backend(self) -> None:
        if self.backend is not None:
            self.backend.close()
            self.backend = None

    def _close_database(self) -> None:
        if self.database is not None:
            self.database.close()
            self.database = None

    async def stop(self) -> None:
        if self.system is None:
            return
        if self.gateway is not None and self.gateway.is_alive:
            timeout = self.config.gateway.drain_timeout_s
            try:
                await self.gateway.ask(Drain(), timeout=timeout + 5)
            except Exception as error:  # the drain is best effort; the stop is not
                log.warning("drain failed: %r", error)
        await self.system.shutdown()
        self._close_database()
        self._close_backend()

    async def announce_ready(self, *, interval_s: float = 0.2) -> None:
        """Log once when every deployment is ready ("all 2 deployments ready: a, b"): the
        gateway listens before the replicas have loaded, so "serving on" does not say it."""
        if self.manager is None:
            return
        while True:
            try:
                views = await self.manager.ask(GetDeploymentStatus(), timeout=30)
            except InferenceRuntimeError:  # stopping
                return
            if views and all(v["state"] == "ready" for v in views):
                names = [v["name"] for v in views]
                plural = "s" if len(names) != 1 else ""
                log.info("all %d deployment%s ready: %s", len(names), plural, ", ".join(names))
                return
            await asyncio.sleep(interval_s)

    async def serve_forever(self) -> None:
        """Run until SIGINT or SIGTERM, then drain and stop."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        host, port = await self.start()
        if self.backend is not None:  # ray.init put its own SIGTERM handler (exit at once)
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
        tune_garbage_collector()
        print(f"inference-runtime serving on http://{host}:{port}/v1", flush=True)
        ready = asyncio.ensure_future(self.announce_ready())
        waiter = asyncio.ensure_future(stop.wait())
        assert self.system is not None
        ended = asyncio.ensure_future(self.system.when_terminated())
        await asyncio.wait({waiter, ended}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        ended.cancel()
        ready.cancel()
        log.info("stopping: draining in-flight requests")
        await self.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
