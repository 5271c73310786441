"""``SharedRoutingTable``: the routing table of one gateway among several (Ray).

Each gateway counts its own leases exactly, as in one process; the other gateways' counts reach
it through the routing board a few tens of milliseconds late. A replica's ``in_flight`` is the
sum (own + ``others``), so every routing policy, ``overloaded`` and the head's drains read the
merged count with no change; only :meth:`release` differs (it never takes a count below what the
others hold). The single-process runtime uses the plain :class:`RoutingTable`: routing and
release there do nothing more than before.

Drains on the head: a gateway that has not seen a replica's DRAINING yet may still route to it.
So from the moment the head sets DRAINING until every gateway has pulled that change
(``ApplyRoutes.acked``), the head counts one more request in flight on the replica; its drain
(which waits for ``in_flight == 0``) then also waits for the requests the other gateways route
there, however late their counts arrive.
"""

from __future__ import annotations

from inference_runtime.actors import ActorRef
from inference_runtime.cluster.messages import (
    ApplyRoutes,
    ReplicaKey,
    RoutesExport,
    SharedReplica,
)
from inference_runtime.cluster.routing import ReplicaEntry
from inference_runtime.cluster.table import RoutingTable
from inference_runtime.types import ReplicaState


class SharedRoutingTable(RoutingTable):
    """``drain_barrier``: hold drains until every gateway has seen them (the head's table)."""

    def __init__(self, *, drain_barrier: bool = False) -> None:
        super().__init__()
        self.drain_barrier = drain_barrier
        self.hosts: dict[ReplicaKey, str] = {}
        self.unacked: set[ReplicaKey] = set()
        self.counts: dict[ReplicaKey, int] = {}
        """The other gateways' counts, as last applied."""

    # -- the merged count ------------------------------------------------------------------

    def release(self, deployment: str, replica_id: str) -> None:
        entry = self.entry(deployment, replica_id)
        if entry is not None and entry.in_flight > entry.others:
            entry.in_flight -= 1

    def own(self, entry: ReplicaEntry) -> int:
        return entry.in_flight - entry.others

    def _settle(self, key: ReplicaKey, entry: ReplicaEntry) -> None:
        others = self.counts.get(key, 0) + (key in self.unacked)
        entry.in_flight += others - entry.others
        entry.others = others

    # -- membership ------------------------------------------------------------------------

    def register(
        self,
        deployment: str,
        replica_id: str,
        engine: ActorRef,
        *,
        routing: str = "least_loaded",
        max_concurrent: int = 64,
        state: ReplicaState = ReplicaState.STARTING,
    ) -> ReplicaEntry:
        key = (deployment, replica_id)
        old = self.entry(deployment, replica_id)
        if old is not None and old.engine != engine:
            self.hosts.pop(key, None)  # the new engine tells its own host
        self.unacked.discard(key)  # registered again: no longer draining
        entry = super().register(
            deployment,
            replica_id,
            engine,
            routing=routing,
            max_concurrent=max_concurrent,
            state=state,
        )
        self._settle(key, entry)
        return entry

    def deregister(self, deployment: str, replica_id: str) -> ReplicaEntry | None:
        key = (deployment, replica_id)
        self.hosts.pop(key, None)
        self.unacked.discard(key)
        return super().deregister(deployment, replica_id)

    def set_host(self, deployment: str, replica_id: str, host: str) -> None:
        if self.entry(deployment, replica_id) is not None:
            self.hosts[(deployment, replica_id)] = host

    def set_state(
        self, deployment: str, replica_id: str, state: ReplicaState, reason: str | None = None
    ) -> bool:
        if not super().set_state(deployment, replica_id, state, reason):
            return False
        key = (deployment, replica_id)
        entry = self.entry(deployment, replica_id)
        assert entry is not None
        if self.drain_barrier and state is ReplicaState.DRAINING and key not in self.unacked:
            self.unacked.add(key)
            self._settle(key, entry)
        return True

    # -- the board -------------------------------------------------------------------------

    def export(self) -> RoutesExport:
        counts: dict[ReplicaKey, int] = {}
        replicas = []
        for deployment, entries in self._replicas.items():
            routing = self._policies[deployment][0]
            for rid, entry in entries.items():
                key = (deployment, rid)
                own = entry.in_flight - entry.others
                if own:
                    counts[key] = own
                host = self.hosts.get(key)
                if host is not None:
                    held = entry.state if key in self._held else None
                    replicas.append(
                        SharedReplica(
                            deployment=deployment,
                            replica_id=rid,
                            host=host,
                            routing=routing,
                            max_concurrent=entry.max_concurrent,
                            held=held,
                            reason=entry.reason if held is not None else None,
                        )
                    )
        return RoutesExport(counts, tuple(replicas))

    def apply(self, message: ApplyRoutes) -> None:
        """Take the other gateways' counts, the acknowledged drains and (on a gateway) the
        states the head holds replicas in."""
        self.counts = message.others
        self.unacked -= message.acked
        for key, (state, reason) in (message.held or {}).items():
            entry = self.entry(*key)
            if entry is not None and (entry.state is not state or key not in self._held):
                self.set_state(key[0], key[1], state, reason)
        for deployment, entries in self._replicas.items():
            for rid, entry in entries.items():
                self._settle((deployment, rid), entry)


__all__ = ["SharedRoutingTable"]
