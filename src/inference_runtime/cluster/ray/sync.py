"""``BoardSyncActor``: one runtime's link to the routing board (``board.RoutingBoard``).

Every ``cluster.sync_interval_s`` it asks the coordinator what this runtime publishes (its own
in-flight count per replica; on the head also each replica's host and held state), pushes the
changes and pulls everybody else's in one Ray call, and tells the coordinator what came back
(the other runtimes' counts; the drains every gateway has seen; on a gateway the states the
head holds replicas in). On a gateway-only runtime it also follows the head's catalog and
replicas (``follower.Follower``). The Ray call runs on this actor's own task: the coordinator's
mailbox never waits on the network, and its Route/Release path is the same as in one process.

When it stops (the runtime stops) it takes its entries off the board at once; a runtime that
dies without stopping loses them after ``cluster.board_ttl_s``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from inference_runtime.actors import (
    Actor,
    ActorRef,
    ChildFailed,
    Deferred,
    Directive,
    OneForOneStrategy,
    SupervisorStrategy,
)
from inference_runtime.cluster.manager import CatalogChanged, WatchCatalog
from inference_runtime.cluster.messages import ExportRoutes, RoutesExport, WaitSynced
from inference_runtime.cluster.ray.board import board_handle
from inference_runtime.cluster.ray.follower import Follower
from inference_runtime.cluster.ray.wire import describe
from inference_runtime.cluster.sharing import RouteSharing
from inference_runtime.config import ClusterConfig
from inference_runtime.engine import ReplicaDown

log = logging.getLogger("inference_runtime.cluster.ray")
_LEAVE_TIMEOUT_S = 2.0


class BoardSyncActor(Actor):
    """``manager``: the head's deployment manager (its catalog is published); without one,
    this runtime is a gateway that follows the board."""

    def __init__(
        self,
        *,
        writer: str,
        coordinator: ActorRef,
        options: ClusterConfig,
        manager: ActorRef | None = None,
        metrics: ActorRef | None = None,
    ) -> None:
        self.sharing = RouteSharing(writer, head=manager is not None)
        self.writer = writer
        self.coordinator = coordinator
        self.options = options
        self.manager = manager
        self.metrics = metrics
        self.board: Any = None
        self.task: asyncio.Task[None] | None = None
        self.closing = False
        self.lookup = False
        """Look the board up again (a sync failed); the last handle is kept to leave by."""

    def pre_start(self) -> None:
        self.synced = asyncio.Event()
        self.follower = None
        if self.manager is not None:
            self.manager.tell(WatchCatalog(self.context.self_ref))
        else:
            self.follower = Follower(
                self.context,
                coordinator=self.coordinator,
                metrics=self.metrics,
                options=self.options,
            )
        self.task = asyncio.get_running_loop().create_task(self._run(), name="board-sync")

    async def post_stop(self) -> None:
        # the flag too: before Python 3.12, wait_for loses a cancellation that comes as the
        # call it waits for completes, and the loop would run on (and the stop wait forever)
        self.closing = True
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task
        if self.board is not None:
            try:
                await asyncio.wait_for(self.board.leave.remote(self.writer), _LEAVE_TIMEOUT_S)
            except Exception as error:  # the board's entries of ours then expire
                log.warning("leaving the routing board failed: %s", describe(error))

    def supervisor_strategy(self) -> SupervisorStrategy:
        return OneForOneStrategy(decider=lambda error: Directive.STOP)

    def receive(self, message: Any) -> Any:
        match message:
            case CatalogChanged(deployments=deployments):
                self.sharing.set_catalog(deployments)
            case WatchCatalog(subscriber=subscriber) if self.follower is not None:
                self.follower.subscribe(subscriber)
            case WaitSynced():
                return Deferred(self.synced.wait())
            case ReplicaDown(replica_id=rid, reason=reason):
                # a gateway's proxy lost its host: the head re-places the replica and the
                # board brings the new host
                log.info("replica %s is down here: %s", rid, reason)
            case ChildFailed(ref=ref) if self.follower is not None:
                self.follower.forget(ref)
        return None

    async def _run(self) -> None:
        interval = self.options.sync_interval_s
        failures = 0
        while not self.closing:
            try:
                await self._sync()
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as error:
                failures += 1
                if failures == 1 or failures % 100 == 0:
                    log.warning("syncing with the routing board failed: %s", describe(error))
                self.lookup = True  # the board: found again (or created anew) at the next try
            await asyncio.sleep(interval)

    async def _sync(self) -> None:
        if self.board is None or self.lookup:
            self.board, self.lookup = board_handle(), False
        timeout = self.options.call_timeout_s
        export: RoutesExport = await self.coordinator.ask(ExportRoutes(), timeout=timeout)
        sent = self.sharing.outgoing(export)
        since = self.sharing.client.since
        call = self.board.sync.remote(self.writer, sent, since, self.options.board_ttl_s)
        reply = await asyncio.wait_for(call, timeout)
        apply = self.sharing.incoming(sent, reply)
        if apply is None:
            return
        if self.follower is not None:  # replicas registered first, then their held states
            self.follower.follow(self.sharing.view())
        self.coordinator.tell(apply)
        self.synced.set()


__all__ = ["BoardSyncActor"]
