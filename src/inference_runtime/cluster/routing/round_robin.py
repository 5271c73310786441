"""``RoundRobin``: each replica in turn, whatever the load."""

from __future__ import annotations

from collections.abc import Sequence

from inference_runtime.cluster.routing.policy import ReplicaEntry


def next_after(candidates: Sequence[ReplicaEntry], last: str | None) -> ReplicaEntry:
    """The candidate whose id follows ``last`` in id order, wrapping around.

    Rotating by id rather than by list position keeps the turn order stable when candidates come
    and go: a replica that drops out (or is excluded once) neither shifts nor skips the others.
    One pass, no sorting.
    """
    first = after = candidates[0]
    found = False
    for entry in candidates:
        rid = entry.replica_id
        if rid < first.replica_id:
            first = entry
        if last is not None and rid > last and (not found or rid < after.replica_id):
            after, found = entry, True
    return after if found else first


class RoundRobin:
    """Cycles through the candidates in replica-id order."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: str | None = None

    def choose(self, candidates: Sequence[ReplicaEntry], *, key: str | None) -> ReplicaEntry:
        chosen = next_after(candidates, self._last)
        self._last = chosen.replica_id
        return chosen
