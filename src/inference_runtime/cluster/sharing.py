"""``RouteSharing``: what one runtime writes on the routing board and what it reads back.

Plain (no actors, no I/O): the Ray sync actor (``cluster.ray.sync``) calls :meth:`outgoing`
before each sync and :meth:`incoming` with the board's answer. The board's keys:

- ``catalog/<name>``: a deployment's spec (``Deployment.to_dict``), written by the head;
- ``replica/<replica id>``: a replica's membership (its host actor, routing policy,
  ``max_concurrent``, and the state the head holds it in), written by the head;
- ``inflight/<writer>``: one runtime's own in-flight count per replica, written only by that
  runtime (so the sum over writers is exact), with ``seen``: the board sequence number of the
  last membership change it has applied to its table (drains are acknowledged with it).

Every key has one writer (the board itself only deletes the keys of a silent writer), so
last-writer-wins never drops a concurrent write of a live writer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from inference_runtime.cluster.board import BoardClient, SyncReply, Versioned
from inference_runtime.cluster.messages import (
    ApplyRoutes,
    ReplicaKey,
    RoutesExport,
    SharedReplica,
)
from inference_runtime.types import Deployment, ReplicaState

CATALOG, REPLICA, INFLIGHT = "catalog/", "replica/", "inflight/"
_DRAINING = ReplicaState.DRAINING.value


@dataclass(frozen=True, slots=True)
class BoardView:
    """What a gateway follows: the head's catalog (specs as plain data) and replicas."""

    catalog: dict[str, dict[str, Any]]
    replicas: dict[ReplicaKey, SharedReplica]


class RouteSharing:
    """``head``: this runtime runs the deployment manager and publishes the catalog and the
    replicas; otherwise it is a gateway that follows them. Both publish their counts."""

    def __init__(self, writer: str, *, head: bool) -> None:
        self.writer = writer
        self.head = head
        self.client = BoardClient(writer)
        self.catalog: dict[str, dict[str, Any]] = {}
        self.seen = 0

    def set_catalog(self, deployments: Mapping[str, Deployment]) -> None:
        """The head's catalog changed (``CatalogChanged``)."""
        self.catalog = {name: spec.to_dict() for name, spec in deployments.items()}

    def outgoing(self, export: RoutesExport) -> dict[str, Versioned]:
        """This runtime's keys now (from its table's export); returns the writes to push."""
        values: dict[str, Any] = {
            INFLIGHT + self.writer: {"seen": self.seen, "counts": export.counts}
        }
        if self.head:
            for name, spec in self.catalog.items():
                values[CATALOG + name] = spec
            for replica in export.replicas:
                values[REPLICA + replica.replica_id] = _replica_value(replica)
        return self.client.publish(values)

    def incoming(self, sent: Mapping[str, Versioned], reply: SyncReply) -> ApplyRoutes | None:
        """Merge the board's answer; returns what the table takes from it (``None`` when the
        board restarted: nothing to apply until the next, full, sync)."""
        client = self.client
        if not client.pulled(sent, reply):
            return None
        seqs = client.seqs
        others: Counter[ReplicaKey] = Counter()
        seen_by: list[int] = []
        for _, entry in client.map.live(INFLIGHT):
            if entry.writer == self.writer:
                continue
            others.update(entry.value["counts"])
            seen_by.append(entry.value["seen"])
        self.seen = max((seq for key, seq in seqs.items() if key.startswith(REPLICA)), default=0)
        if not self.head:
            held = {
                (r.deployment, r.replica_id): (r.held, r.reason)
                for r in self.view().replicas.values()
                if r.held is not None
            }
            return ApplyRoutes(dict(others), held=held)
        return ApplyRoutes(dict(others), acked=self._acked(min(seen_by, default=None)))

    def _acked(self, slowest: int | None) -> frozenset[ReplicaKey]:
        """The replicas this head drains whose DRAINING every gateway has applied (the board
        numbered that write; a gateway's ``seen`` at or past it has it in its table)."""
        acked = []
        for key, value in self.client.mine.items():
            if not key.startswith(REPLICA) or value["held"] != _DRAINING:
                continue
            seq = self.client.seqs.get(key)
            if key in self.client.pending or seq is None:
                continue  # not on the board yet
            if slowest is None or slowest >= seq:
                acked.append((value["deployment"], value["replica_id"]))
        return frozenset(acked)

    def view(self) -> BoardView:
        """The head's catalog and replicas as this runtime's copy of the board has them."""
        live = self.client.map.live
        catalog = {key[len(CATALOG) :]: entry.value for key, entry in live(CATALOG)}
        replicas = {}
        for _, entry in live(REPLICA):
            replica = _replica(entry.value)
            replicas[(replica.deployment, replica.replica_id)] = replica
        return BoardView(catalog, replicas)


def _replica_value(replica: SharedReplica) -> dict[str, Any]:
    # plain data on the board: the board's process never needs the runtime's classes
    return {
        "deployment": replica.deployment,
        "replica_id": replica.replica_id,
        "host": replica.host,
        "routing": replica.routing,
        "max_concurrent": replica.max_concurrent,
        "held": replica.held.value if replica.held is not None else None,
        "reason": replica.reason,
    }


def _replica(value: Mapping[str, Any]) -> SharedReplica:
    held = value["held"]
    return SharedReplica(
        deployment=value["deployment"],
        replica_id=value["replica_id"],
        host=value["host"],
        routing=value["routing"],
        max_concurrent=value["max_concurrent"],
        held=ReplicaState(held) if held is not None else None,
        reason=value["reason"],
    )


__all__ = ["CATALOG", "INFLIGHT", "REPLICA", "BoardView", "RouteSharing"]
