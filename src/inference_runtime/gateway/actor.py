"""``ApiGatewayActor`` and ``spawn_gateway``: the HTTP listener as an actor in the tree."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from inference_runtime.actors import Actor, ActorRef, ActorSystem, Props
from inference_runtime.cluster import CatalogChanged, WatchCatalog
from inference_runtime.config import AuthConfig, GatewayConfig
from inference_runtime.gateway.server import GatewayServer


@dataclass(frozen=True, slots=True)
class GetAddress:
    """Answers the bound ``(host, port)``."""


@dataclass(frozen=True, slots=True)
class Drain:
    """Stop accepting connections and wait (bounded) for in-flight requests (ask)."""

    timeout_s: float | None = None


class ApiGatewayActor(Actor):
    def __init__(
        self,
        config: GatewayConfig,
        coordinator: ActorRef,
        *,
        manager: ActorRef | None = None,
        metrics: ActorRef | None = None,
        auth: AuthConfig | None = None,
    ) -> None:
        self.config = config
        self.coordinator = coordinator
        self.manager = manager
        self.metrics = metrics
        self.auth = auth

    async def pre_start(self) -> None:
        system = self.context.system
        manager = self.manager or system.child("mgr")
        metrics = self.metrics or system.child("metrics")
        self.server = GatewayServer(
            config=self.config,
            system=system,
            coordinator=self.coordinator,
            metrics=metrics,
            manager=manager,
            placement=system.child("placement"),
            auth=self.auth,
        )
        await self.server.start()
        if manager is not None:
            manager.tell(WatchCatalog(self.context.self_ref))

    async def post_stop(self) -> None:
        await self.server.close()

    async def receive(self, message: Any) -> Any:
        match message:
            case CatalogChanged(deployments=deployments):
                self.server.set_catalog(deployments)
            case GetAddress():
                return self.server.address
            case Drain(timeout_s=timeout):
                await self.server.drain(self.config.drain_timeout_s if timeout is None else timeout)
        return None


def spawn_gateway(
    system: ActorSystem,
    config: GatewayConfig,
    coordinator: ActorRef,
    *,
    manager: ActorRef | None = None,
    metrics: ActorRef | None = None,
    auth: AuthConfig | None = None,
    name: str = "gateway",
) -> ActorRef:
    """Start the HTTP gateway as ``/user/<name>``. The deployment manager and the metrics actor
    are found at ``/user/mgr`` and ``/user/metrics`` unless given (the seed's wiring); ``auth``:
    who may call it (default: no keys, which only a loopback address allows)."""
    return system.actor_of(
        Props(
            lambda: ApiGatewayActor(
                config, coordinator, manager=manager, metrics=metrics, auth=auth
            )
        ),
        name,
    )
