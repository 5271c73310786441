"""Where settled spend is kept: the ``SpendStore`` interface and its in-memory implementation.

The ``BudgetLedger`` asks a store only three questions (how much was spent after a time, when
does enough of it leave, forget the old), so a durable store (SQLite, see DESIGN.md section 4)
can replace the in-memory one without touching the ledger.
"""

from __future__ import annotations

from bisect import bisect_right
from typing import Protocol


class SpendStore(Protocol):
    """Settled spend per deployment, as ``(at, amount)`` entries in time order."""

    def add(self, deployment: str, at: float, amount: float) -> None:
        """Record ``amount`` spent at time ``at`` (not earlier than the deployment's last entry)."""
        ...

    def spent_since(self, deployment: str, since: float) -> float:
        """The spend recorded strictly after ``since``."""
        ...

    def release_time(self, deployment: str, since: float, amount: float) -> float | None:
        """Summing the entries after ``since`` oldest first: the time of the entry at which the
        sum first reaches ``amount``; ``None`` when all of them together stay below it."""
        ...

    def prune(self, before: float) -> None:
        """Forget the spend recorded at or before ``before`` (older than every window)."""
        ...

    def forget(self, deployment: str) -> None:
        """Drop everything recorded for ``deployment``."""
        ...

    def deployments(self) -> frozenset[str]:
        """The deployments with spend on record."""
        ...


class _Series:
    """Entry times with running totals (prefix sums): window sums are two bisections."""

    __slots__ = ("base", "start", "times", "totals")

    def __init__(self) -> None:
        self.times: list[float] = []
        self.totals: list[float] = []
        """``totals[i]``: everything spent up to and including ``times[i]``, minus ``base``."""
        self.start = 0
        """Entries before ``start`` are pruned (kept until compaction)."""
        self.base = 0.0
        """The running total just before ``times[start]``."""

    def total_before(self, index: int) -> float:
        return self.totals[index - 1] if index > self.start else self.base

    def compact(self) -> None:
        if self.start < 1024 or self.start * 2 < len(self.times):
            return
        offset = self.base
        del self.times[: self.start]
        del self.totals[: self.start]
        self.totals = [total - offset for total in self.totals]
        self.base, self.start = 0.0, 0


class InMemorySpendStore:
    """A ``SpendStore`` in process memory.

    Entries less than ``resolution`` seconds apart are merged into one stamped with the later
    time, so memory stays bounded (a day holds at most ``86400 / resolution`` entries per
    deployment) and merged spend leaves a window no earlier than its parts would: a budget is
    never overshot because of the merge.
    """

    def __init__(self, resolution: float = 1.0) -> None:
        if resolution < 0:
            raise ValueError("resolution must be >= 0")
        self._resolution = resolution
        self._series: dict[str, _Series] = {}

    def add(self, deployment: str, at: float, amount: float) -> None:
        series = self._series.get(deployment)
        if series is None:
            series = self._series[deployment] = _Series()
        times, totals = series.times, series.totals
        if len(times) > series.start:
            last = times[-1]
            at = max(at, last)  # a time source that steps back must not unsort the series
            if at - last < self._resolution:
                times[-1] = at
                totals[-1] += amount
                return
            totals.append(totals[-1] + amount)
        else:
            totals.append(series.base + amount)
        times.append(at)

    def spent_since(self, deployment: str, since: float) -> float:
        series = self._series.get(deployment)
        if series is None or len(series.times) == series.start:
            return 0.0
        index = bisect_right(series.times, since, series.start)
        return max(0.0, series.totals[-1] - series.total_before(index))

    def release_time(self, deployment: str, since: float, amount: float) -> float | None:
        series = self._series.get(deployment)
        if series is None:
            return None
        index = bisect_right(series.times, since, series.start)
        if index == len(series.times):
            return None
        target = series.total_before(index) + amount
        # totals are non-decreasing: the first entry whose running total reaches the target
        lo, hi = index, len(series.totals)
        while lo < hi:
            mid = (lo + hi) // 2
            if series.totals[mid] < target - 1e-12:
                lo = mid + 1
            else:
                hi = mid
        return series.times[lo] if lo < len(series.times) else None

    def prune(self, before: float) -> None:
        for name in list(self._series):
            series = self._series[name]
            index = bisect_right(series.times, before, series.start)
            if index == len(series.times):
                del self._series[name]
                continue
            if index > series.start:
                series.base = series.totals[index - 1]
                series.start = index
                series.compact()

    def forget(self, deployment: str) -> None:
        self._series.pop(deployment, None)

    def deployments(self) -> frozenset[str]:
        return frozenset(self._series)
