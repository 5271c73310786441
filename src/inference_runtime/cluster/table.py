"""``RoutingTable``: every deployment's replicas with live load, and the choice of one per request.

A plain class (no actors, no I/O) so the routing rules are unit-tested directly; the
:class:`~inference_runtime.cluster.coordinator.DpCoordinatorActor` is a thin shell over it that
serialises access through its mailbox.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from inference_runtime.actors import ActorRef
from inference_runtime.cluster.messages import ReplicaSnapshot, RouteLease, RoutingTableSnapshot
from inference_runtime.cluster.routing import ReplicaEntry, RoutingPolicy, make_policy
from inference_runtime.errors import NoHealthyReplica
from inference_runtime.types import EngineLoad, ReplicaState

RETRY_AFTER_S = 1.0
"""The Retry-After hint of ``NoHealthyReplica``: replicas start, recover or get re-placed."""

_HEALTHY = ReplicaState.HEALTHY
_HELD_STATES = (ReplicaState.DRAINING, ReplicaState.FAILED)


class RoutingTable:
    """Replicas per deployment (in registration order), each deployment with its own policy.

    Only HEALTHY replicas are routed to. ``in_flight`` counts exactly the leases handed out and
    not yet released, so policies see every request the moment it is routed.
    """

    def __init__(self) -> None:
        self._replicas: dict[str, dict[str, ReplicaEntry]] = {}
        self._policies: dict[str, tuple[str, RoutingPolicy]] = {}
        self._held: set[tuple[str, str]] = set()
        """Replicas the manager put in DRAINING or FAILED: engine reports cannot revive them."""
        self._last_failure: dict[str, str] = {}
        """Per deployment, why its latest replica failed, kept after the replica is gone (one
        that cannot even start leaves the table at once): a 503 then says why."""

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
        """Add a replica, or replace the entry with the same id (its in-flight and routed counts
        carry over: those requests are still out; its load carries over if the engine is the
        same). A ``routing`` different from the deployment's current one replaces its policy."""
        if max_concurrent < 1:
            raise ValueError("max_concurrent: must be >= 1")
        current = self._policies.get(deployment)
        if current is None or current[0] != routing:
            self._policies[deployment] = (routing, make_policy(routing))
        replicas = self._replicas.setdefault(deployment, {})
        entry = ReplicaEntry(replica_id, engine, state=state, max_concurrent=max_concurrent)
        old = replicas.get(replica_id)
        if old is not None:
            entry.in_flight, entry.routed_total = old.in_flight, old.routed_total
            entry.others = old.others
            if old.engine == engine:
                entry.waiting, entry.running = old.waiting, old.running
                entry.context_restarts = old.context_restarts
        replicas[replica_id] = entry
        self._note(deployment, state, None)
        self._held.discard((deployment, replica_id))
        return entry

    def deregister(self, deployment: str, replica_id: str) -> ReplicaEntry | None:
        """Remove a replica; returns its entry (``None`` if unknown). A deployment left without
        replicas is dropped along with its policy."""
        replicas = self._replicas.get(deployment)
        if replicas is None:
            return None
        entry = replicas.pop(replica_id, None)
        self._held.discard((deployment, replica_id))
        if not replicas:
            del self._replicas[deployment]
            del self._policies[deployment]
        return entry

    def remove_engine(self, engine: ActorRef) -> list[tuple[str, str]]:
        """Deregister every replica served by ``engine`` (it stopped); returns their keys."""
        gone = [
            (deployment, rid)
            for deployment, replicas in self._replicas.items()
            for rid, entry in replicas.items()
            if entry.engine == engine
        ]
        for deployment, rid in gone:
            self.deregister(deployment, rid)
        return gone

    def uses_engine(self, engine: ActorRef) -> bool:
        return any(
            entry.engine == engine
            for replicas in self._replicas.values()
            for entry in replicas.values()
        )

    def entry(self, deployment: str, replica_id: str) -> ReplicaEntry | None:
        return self._replicas.get(deployment, {}).get(replica_id)

    def policy_name(self, deployment: str) -> str | None:
        current = self._policies.get(deployment)
        return current[0] if current is not None else None

    # -- state and load --------------------------------------------------------------------

    def set_state(
        self, deployment: str, replica_id: str, state: ReplicaState, reason: str | None = None
    ) -> bool:
        """The manager sets a state; DRAINING and FAILED then hold against engine reports.
        Returns False for an unknown replica."""
        entry = self.entry(deployment, replica_id)
        if entry is None:
            return False
        entry.state, entry.reason = state, reason
        self._note(deployment, state, reason)
        if state in _HELD_STATES:
            self._held.add((deployment, replica_id))
        else:
            self._held.discard((deployment, replica_id))
        return True

    def report(self, load: EngineLoad, *, engine: ActorRef | None = None) -> bool:
        """Apply an engine's load report; False (ignored) for an unknown replica, or when
        ``engine`` (the report's sender) is not the engine registered for it now: an old
        incarnation still reporting while it stops must not touch its successor.

        The engine's state applies unless the manager holds the replica in DRAINING or FAILED;
        then only a FAILED report gets through (failure wins, nothing revives it but the manager).
        """
        entry = self.entry(load.deployment, load.replica_id)
        if entry is None or (engine is not None and entry.engine != engine):
            return False
        entry.waiting, entry.running = load.waiting, load.running
        entry.context_restarts = load.context_restarts
        held = (load.deployment, load.replica_id) in self._held
        if not held or load.state is ReplicaState.FAILED:
            entry.state, entry.reason = load.state, load.reason
            self._note(load.deployment, load.state, load.reason)
        return True

    # -- routing ---------------------------------------------------------------------------

    def route(
        self,
        deployment: str,
        *,
        session_key: str | None = None,
        exclude: frozenset[str] = frozenset(),
    ) -> RouteLease:
        """Pick a HEALTHY replica not in ``exclude`` and count the request in flight on it.

        Raises ``NoHealthyReplica`` (retryable, 503) saying why none could be picked.
        """
        replicas = self._replicas.get(deployment)
        if not replicas:
            failure = self._last_failure.get(deployment)
            why = f" (last failure: {failure})" if failure else ""
            raise NoHealthyReplica(
                f"deployment {deployment!r} has no replicas{why}", retry_after=RETRY_AFTER_S
            )
        candidates = [
            entry
            for entry in replicas.values()
            if entry.state is _HEALTHY and entry.replica_id not in exclude
        ]
        if not candidates:
            raise _unroutable(deployment, replicas.values())
        chosen = self._policies[deployment][1].choose(candidates, key=session_key)
        chosen.in_flight += 1
        chosen.routed_total += 1
        return RouteLease(deployment, chosen.replica_id, chosen.engine)

    def _note(self, deployment: str, state: ReplicaState, reason: str | None) -> None:
        if state is ReplicaState.FAILED and reason:
            self._last_failure[deployment] = reason
        elif state is _HEALTHY:
            self._last_failure.pop(deployment, None)

    def release(self, deployment: str, replica_id: str) -> None:
        """A routed request is done; never below zero, unknown replicas ignored."""
        entry = self.entry(deployment, replica_id)
        if entry is not None and entry.in_flight > 0:
            entry.in_flight -= 1

    def snapshot(self) -> RoutingTableSnapshot:
        return RoutingTableSnapshot(
            {
                deployment: tuple(_snapshot(deployment, e) for e in replicas.values())
                for deployment, replicas in self._replicas.items()
            }
        )


def _snapshot(deployment: str, entry: ReplicaEntry) -> ReplicaSnapshot:
    return ReplicaSnapshot(
        deployment=deployment,
        replica_id=entry.replica_id,
        state=entry.state,
        in_flight=entry.in_flight,
        waiting=entry.waiting,
        running=entry.running,
        max_concurrent=entry.max_concurrent,
        context_restarts=entry.context_restarts,
        routed_total=entry.routed_total,
        reason=entry.reason,
    )


def _unroutable(deployment: str, entries: Iterable[ReplicaEntry]) -> NoHealthyReplica:
    """Say why no replica could take the request: an operator reads this in a 503."""
    counts: Counter[str] = Counter()
    last_failure: str | None = None
    for entry in entries:
        if entry.state is _HEALTHY:
            counts["excluded as already tried"] += 1  # healthy, so it must have been excluded
        else:
            counts[entry.state.value] += 1  # failed, draining, starting
            if entry.state is ReplicaState.FAILED and entry.reason:
                last_failure = entry.reason
    total = sum(counts.values())
    if len(counts) == 1:
        (why,) = counts
        summary = f"all {why} ({total} replica{'s' if total > 1 else ''})"
    else:
        summary = ", ".join(f"{n} {why}" for why, n in counts.most_common())
    if last_failure is not None:
        summary += f" (last failure: {last_failure})"
    return NoHealthyReplica(
        f"deployment {deployment!r} has no healthy replica: {summary}", retry_after=RETRY_AFTER_S
    )
