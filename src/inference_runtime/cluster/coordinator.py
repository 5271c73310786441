"""``DpCoordinatorActor``: the routing table as an actor, the one place every route is counted.

The actor only serialises access (one message at a time, so in-flight counts are exact without
locks) and ties replicas to their engines' lifetimes: it watches every registered engine and drops
an engine's replicas when it stops. The rules live in :class:`RoutingTable` (with several
gateways on Ray: :class:`~inference_runtime.cluster.shared_table.SharedRoutingTable`).
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from inference_runtime.actors import Actor, ActorRef, Terminated
from inference_runtime.cluster.messages import (
    ApplyRoutes,
    DeregisterReplica,
    ExportRoutes,
    GetRoutingTable,
    RegisterReplica,
    Release,
    ReplicaHost,
    ReplicaSnapshot,
    Route,
    RouteLease,
    RoutingTableSnapshot,
    SetReplicaState,
)
from inference_runtime.cluster.shared_table import SharedRoutingTable
from inference_runtime.cluster.table import RoutingTable
from inference_runtime.errors import InferenceRuntimeError
from inference_runtime.types import EngineLoad

log = logging.getLogger("inference_runtime.cluster")


class DpCoordinatorActor(Actor):
    """Answers :class:`Route` with a :class:`RouteLease`; takes registrations, state changes,
    engine load reports (:class:`~inference_runtime.types.EngineLoad`) and :class:`Release`.

    ``NoHealthyReplica`` answers the ask and leaves the coordinator running (``replied_errors``):
    a restart would lose every in-flight count. Pass a ``table`` shared by the Props factory to
    keep the table across restarts anyway (watches belong to the actor and survive them).
    """

    replied_errors: ClassVar[tuple[type[BaseException], ...]] = (InferenceRuntimeError,)
    direct_delivery: ClassVar[bool] = True  # every route and release: no wake-up each

    def __init__(self, table: RoutingTable | None = None) -> None:
        self.table = table if table is not None else RoutingTable()

    def receive(self, message: Any) -> Any:
        table = self.table
        match message:
            case Route(deployment=deployment, session_key=key, exclude=exclude):
                return table.route(deployment, session_key=key, exclude=exclude)
            case Release(deployment=deployment, replica_id=rid):
                table.release(deployment, rid)
            case EngineLoad():
                table.report(message, engine=self.context.sender)
            case RegisterReplica():
                self._register(message)
            case DeregisterReplica(deployment=deployment, replica_id=rid):
                entry = table.deregister(deployment, rid)
                if entry is not None:
                    self._unwatch_if_unused(entry.engine)
            case SetReplicaState(deployment=deployment, replica_id=rid, state=state, reason=why):
                table.set_state(deployment, rid, state, why)
            case GetRoutingTable():
                return table.snapshot()
            case ApplyRoutes() | ExportRoutes() | ReplicaHost():
                return self._share(message)
            case Terminated(ref=engine):
                for deployment, rid in table.remove_engine(engine):
                    log.info(
                        "engine %s stopped: replica %s/%s deregistered", engine, deployment, rid
                    )
            case _:
                log.warning("coordinator: unknown message %r", message)
                self.context.system.dead_letter(message, self.context.self_ref, self.context.sender)
        return None

    def _share(self, message: ApplyRoutes | ExportRoutes | ReplicaHost) -> object:
        """Several gateways (Ray): only a shared table takes part; a plain one ignores it."""
        table = self.table
        if not isinstance(table, SharedRoutingTable):
            return None
        match message:
            case ApplyRoutes():
                table.apply(message)
            case ExportRoutes():
                return table.export()
            case ReplicaHost(deployment=deployment, replica_id=rid, host=host):
                entry = table.entry(deployment, rid)
                if entry is not None and entry.engine == self.context.sender:  # not a late one
                    table.set_host(deployment, rid, host)
        return None

    def _register(self, message: RegisterReplica) -> None:
        old = self.table.entry(message.deployment, message.replica_id)
        self.table.register(
            message.deployment,
            message.replica_id,
            message.engine,
            routing=message.routing,
            max_concurrent=message.max_concurrent,
            state=message.state,
        )
        self.context.watch(message.engine)  # idempotent; Terminated at once if already dead
        if old is not None and old.engine != message.engine:
            self._unwatch_if_unused(old.engine)

    def _unwatch_if_unused(self, engine: ActorRef) -> None:
        if not self.table.uses_engine(engine):
            self.context.unwatch(engine)


__all__ = [
    "DeregisterReplica",
    "DpCoordinatorActor",
    "GetRoutingTable",
    "RegisterReplica",
    "Release",
    "ReplicaSnapshot",
    "Route",
    "RouteLease",
    "RoutingTable",
    "RoutingTableSnapshot",
    "SetReplicaState",
]
