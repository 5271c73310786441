"""A fixed-bucket histogram: cheap to observe, frozen to read."""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise

DEFAULT_LATENCY_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
"""Upper bounds (seconds) for request latencies: time to first token, end to end, queue time."""

INTER_TOKEN_BUCKETS: tuple[float, ...] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.15,
    0.25,
    0.5,
    1.0,
    2.5,
)
"""Upper bounds (seconds) for the gap between two tokens of one stream."""


@dataclass(frozen=True, slots=True)
class HistogramSnapshot:
    """The state of a :class:`Histogram` at one moment.

    ``counts`` are per bucket, NOT cumulative: ``counts[i]`` observations fell in
    ``(bounds[i-1], bounds[i]]`` and the last entry (``len(bounds)``-th) counts those above
    ``bounds[-1]`` (the ``+Inf`` bucket). Prometheus' cumulative ``le`` counts are
    :meth:`cumulative`.
    """

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    sum: float
    count: int

    def cumulative(self) -> tuple[int, ...]:
        """Observations ``<=`` each bound, then the total (the ``+Inf`` bucket)."""
        total, result = 0, []
        for value in self.counts:
            total += value
            result.append(total)
        return tuple(result)

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count else None

    def quantile(self, q: float) -> float | None:
        """An estimate of the ``q`` quantile (the bound of the bucket that holds it; ``inf`` when
        it lies beyond the last bound); ``None`` with no observations."""
        if not 0.0 <= q <= 1.0:
            raise ValueError("q must be within [0, 1]")
        if self.count == 0:
            return None
        rank = max(1, math.ceil(q * self.count))
        for index, seen in enumerate(self.cumulative()):
            if seen >= rank:
                return self.bounds[index] if index < len(self.bounds) else math.inf
        return math.inf  # pragma: no cover - the last cumulative count is the total


class Histogram:
    """Counts observations into buckets with fixed upper bounds (Prometheus ``le`` semantics:
    a value equal to a bound belongs to that bound's bucket). NaN observations are ignored."""

    __slots__ = ("_bounds", "_count", "_counts", "_sum")

    def __init__(self, bounds: Sequence[float] = DEFAULT_LATENCY_BUCKETS) -> None:
        checked = tuple(float(bound) for bound in bounds)
        if not checked:
            raise ValueError("a histogram needs at least one bucket bound")
        if any(not math.isfinite(bound) for bound in checked):
            raise ValueError("bucket bounds must be finite (+Inf is implicit)")
        if any(low >= high for low, high in pairwise(checked)):
            raise ValueError("bucket bounds must be strictly increasing")
        self._bounds = checked
        self._counts = [0] * (len(checked) + 1)
        self._sum = 0.0
        self._count = 0

    @property
    def bounds(self) -> tuple[float, ...]:
        return self._bounds

    @property
    def count(self) -> int:
        return self._count

    def observe(self, value: float) -> None:
        if value != value:  # NaN
            return
        self._counts[bisect_left(self._bounds, value)] += 1
        self._sum += value
        self._count += 1

    def observe_many(self, values: Iterable[float]) -> None:
        for value in values:
            self.observe(value)

    def observe_clamped(self, values: Sequence[float]) -> None:
        """Observe each value, negative and NaN ones as 0.0 (the gaps between a stream's
        tokens, most of them 0.0 within a batch): one tight pass, no call per value."""
        counts, bounds = self._counts, self._bounds
        total, zeros = 0.0, 0
        for value in values:
            if value > 0.0:
                counts[bisect_left(bounds, value)] += 1
                total += value
            else:
                zeros += 1
        if zeros:
            counts[bisect_left(bounds, 0.0)] += zeros
        self._sum += total
        self._count += len(values)

    def snapshot(self) -> HistogramSnapshot:
        return HistogramSnapshot(self._bounds, tuple(self._counts), self._sum, self._count)
