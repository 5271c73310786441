"""Histogram: bucket placement, snapshots, validation."""

from __future__ import annotations

import math

import pytest

from inference_runtime.metrics import DEFAULT_LATENCY_BUCKETS, Histogram, HistogramSnapshot


def test_values_land_in_le_buckets() -> None:
    histogram = Histogram((0.1, 1.0, 10.0))
    for value in (0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 11.0, math.inf):
        histogram.observe(value)
    snapshot = histogram.snapshot()
    assert snapshot.bounds == (0.1, 1.0, 10.0)
    assert snapshot.counts == (2, 2, 2, 2)  # per bucket, the last is +Inf
    assert snapshot.cumulative() == (2, 4, 6, 8)
    assert snapshot.count == 8


def test_sum_count_and_mean() -> None:
    histogram = Histogram()
    histogram.observe_many([0.2, 0.4])
    snapshot = histogram.snapshot()
    assert snapshot.sum == pytest.approx(0.6)
    assert snapshot.count == 2
    assert snapshot.mean == pytest.approx(0.3)
    assert Histogram().snapshot().mean is None


def test_nan_is_ignored() -> None:
    histogram = Histogram((1.0,))
    histogram.observe(math.nan)
    assert histogram.count == 0
    assert histogram.snapshot().sum == 0.0


def test_snapshot_is_frozen_and_detached() -> None:
    histogram = Histogram((1.0,))
    histogram.observe(0.5)
    snapshot = histogram.snapshot()
    histogram.observe(0.5)
    assert snapshot.counts == (1, 0)
    with pytest.raises(AttributeError):
        snapshot.count = 3  # type: ignore[misc]


def test_quantile_is_the_holding_bucket_bound() -> None:
    histogram = Histogram((0.1, 1.0))
    histogram.observe_many([0.05] * 9 + [0.5])
    snapshot = histogram.snapshot()
    assert snapshot.quantile(0.5) == 0.1
    assert snapshot.quantile(0.95) == 1.0
    histogram.observe_many([5.0] * 10)
    assert histogram.snapshot().quantile(1.0) == math.inf
    assert HistogramSnapshot((1.0,), (0, 0), 0.0, 0).quantile(0.5) is None
    with pytest.raises(ValueError):
        snapshot.quantile(1.5)


def test_default_buckets_cover_a_millisecond_to_a_minute() -> None:
    assert DEFAULT_LATENCY_BUCKETS[0] == 0.001
    assert DEFAULT_LATENCY_BUCKETS[-1] == 60.0
    assert list(DEFAULT_LATENCY_BUCKETS) == sorted(set(DEFAULT_LATENCY_BUCKETS))


@pytest.mark.parametrize("bounds", [(), (1.0, 1.0), (2.0, 1.0), (1.0, math.inf), (math.nan,)])
def test_bad_bounds_are_refused(bounds: tuple[float, ...]) -> None:
    with pytest.raises(ValueError):
        Histogram(bounds)


def test_observe_clamped_counts_like_one_by_one() -> None:
    values = [0.0, 0.0, 0.003, -1.0, float("nan"), 0.2, 0.0, 7.5, 1e9]
    bulk, single = Histogram(), Histogram()
    bulk.observe_clamped(values)
    for value in values:
        single.observe(value if value > 0.0 else 0.0)  # negative and NaN count as zero
    assert bulk.snapshot() == single.snapshot()
    assert bulk.count == len(values)
