"""``LeastLoaded``: the replica with the fewest requests in flight.

The coordinator's own in-flight count is exact at the moment of choosing, unlike an engine's
periodic report, so a burst of requests spreads at once instead of piling onto the replica that
looked idle in the last report.
"""

from __future__ import annotations

from collections.abc import Sequence

from inference_runtime.cluster.routing.policy import ReplicaEntry
from inference_runtime.cluster.routing.round_robin import next_after


class LeastLoaded:
    """Minimum ``in_flight``; ties go to fewer ``waiting``, then rotate so they spread evenly."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last: str | None = None

    def choose(self, candidates: Sequence[ReplicaEntry], *, key: str | None) -> ReplicaEntry:
        best = candidates[0]
        ties = [best]
        for entry in candidates[1:]:
            if entry.in_flight < best.in_flight or (
                entry.in_flight == best.in_flight and entry.waiting < best.waiting
            ):
                best = entry
                ties = [entry]
            elif entry.in_flight == best.in_flight and entry.waiting == best.waiting:
                ties.append(entry)
        chosen = best if len(ties) == 1 else next_after(ties, self._last)
        self._last = chosen.replica_id
        return chosen
