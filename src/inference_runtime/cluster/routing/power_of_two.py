"""``PowerOfTwo``: the less loaded of two replicas drawn at random.

Two random choices give nearly the balance of a full least-loaded scan while avoiding its herd
effect when several routers share stale numbers; with one coordinator it mostly matters as a
cheap, randomised alternative.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from inference_runtime.cluster.routing.policy import ReplicaEntry


class PowerOfTwo:
    """Samples two distinct candidates and takes the one with lower ``in_flight`` (then fewer
    ``waiting``; a full tie keeps the first drawn). Pass a seeded ``rng`` for reproducible runs."""

    __slots__ = ("_rng",)

    def __init__(self, rng: random.Random | None = None) -> None:
        self._rng = rng if rng is not None else random.Random()

    def choose(self, candidates: Sequence[ReplicaEntry], *, key: str | None) -> ReplicaEntry:
        count = len(candidates)
        if count == 1:
            return candidates[0]
        i = self._rng.randrange(count)
        j = self._rng.randrange(count - 1)
        if j >= i:
            j += 1  # distinct without building a sample
        a, b = candidates[i], candidates[j]
        if (b.in_flight, b.waiting) < (a.in_flight, a.waiting):
            return b
        return a
