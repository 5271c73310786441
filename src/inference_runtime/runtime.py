"""``Runtime``: the whole topology built from a config, started and stopped as one.

It is the seed's canonical wiring (coordinator, manager, metrics, gateway) plus the deployments
of the config file, and a graceful stop: stop accepting, drain in-flight requests (bounded), then
stop every actor, children before parents.
"""

from __future__ import annotations

import asyncio
import logging
import signal

from inference_runtime.actors import ActorRef, ActorSystem, Props
from inference_runtime.cluster import ApplyDeployment, DeploymentManagerActor, DpCoordinatorActor
from inference_runtime.config import RuntimeConfig
from inference_runtime.gateway import Drain, GetAddress, spawn_gateway
from inference_runtime.metrics import MetricsActor

log = logging.getLogger("inference_runtime")
COORDINATOR_MAILBOX = 65_536
METRICS_MAILBOX = 65_536


class Runtime:
    def __init__(self, config: RuntimeConfig, *, name: str = "inference") -> None:
        self.config = config
        self.name = name
        self.system: ActorSystem | None = None
        self.gateway: ActorRef | None = None
        self.manager: ActorRef | None = None
        self.address: tuple[str, int] | None = None

    async def start(self) -> tuple[str, int]:
        """Build the topology, apply the config's deployments, listen; returns (host, port)."""
        system = self.system = ActorSystem.create(self.name)
        # one route ask and one release per request, plus load reports: a deep mailbox
        dp = system.actor_of(
            Props.create(lambda: DpCoordinatorActor(), mailbox_capacity=COORDINATOR_MAILBOX), "dp"
        )
        metrics = system.actor_of(
            Props.create(lambda: MetricsActor(), mailbox_capacity=METRICS_MAILBOX), "metrics"
        )
        self.manager = system.actor_of(
            Props.create(lambda: DeploymentManagerActor(coordinator=dp, metrics=metrics)), "mgr"
        )
        try:
            for deployment in self.config.deployments:
                await self.manager.ask(ApplyDeployment(deployment))
            self.gateway = spawn_gateway(system, self.config.gateway, dp)
            self.address = await self.gateway.ask(GetAddress())
        except BaseException:
            await system.shutdown()
            raise
        return self.address

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

    async def serve_forever(self) -> None:
        """Run until SIGINT or SIGTERM, then drain and stop."""
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        host, port = await self.start()
        print(f"inference-runtime serving on http://{host}:{port}/v1", flush=True)
        waiter = asyncio.ensure_future(stop.wait())
        assert self.system is not None
        ended = asyncio.ensure_future(self.system.when_terminated())
        await asyncio.wait({waiter, ended}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        ended.cancel()
        log.info("stopping: draining in-flight requests")
        await self.stop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
