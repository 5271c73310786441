"""InMemorySpendStore: window sums and release times against a brute-force model."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inference_runtime.metrics import InMemorySpendStore, SpendStore


def test_is_a_spend_store() -> None:
    store: SpendStore = InMemorySpendStore()
    store.add("d", 0.0, 1.0)
    assert store.deployments() == frozenset({"d"})


def test_window_sums_are_strictly_after_since() -> None:
    store = InMemorySpendStore(resolution=0.0)
    store.add("d", 10.0, 1.0)
    store.add("d", 20.0, 2.0)
    assert store.spent_since("d", 0.0) == 3.0
    assert store.spent_since("d", 10.0) == 2.0
    assert store.spent_since("d", 20.0) == 0.0
    assert store.spent_since("other", 0.0) == 0.0


def test_release_time() -> None:
    store = InMemorySpendStore(resolution=0.0)
    for at, amount in ((1.0, 1.0), (2.0, 1.0), (3.0, 1.0)):
        store.add("d", at, amount)
    assert store.release_time("d", 0.0, 0.5) == 1.0
    assert store.release_time("d", 0.0, 2.0) == 2.0
    assert store.release_time("d", 1.0, 2.0) == 3.0
    assert store.release_time("d", 0.0, 3.5) is None
    assert store.release_time("missing", 0.0, 1.0) is None


def test_close_entries_merge_at_the_later_time() -> None:
    store = InMemorySpendStore(resolution=1.0)
    store.add("d", 0.0, 1.0)
    store.add("d", 0.5, 1.0)
    store.add("d", 0.9, 1.0)  # 0.4 s after the merged entry's time
    assert store.spent_since("d", 0.6) == 3.0  # merged: stamped 0.9, never earlier
    assert store.release_time("d", -1.0, 1.0) == 0.9


def test_prune_and_forget() -> None:
    store = InMemorySpendStore(resolution=0.0)
    for at in range(5):
        store.add("d", float(at), 1.0)
    store.add("e", 0.0, 1.0)
    store.prune(2.0)
    assert store.spent_since("d", -1.0) == 2.0
    assert store.deployments() == frozenset({"d"})
    store.add("d", 5.0, 1.0)
    assert store.spent_since("d", 3.0) == 2.0
    store.forget("d")
    assert store.deployments() == frozenset()


def test_compaction_keeps_sums() -> None:
    store = InMemorySpendStore(resolution=0.0)
    for at in range(5000):
        store.add("d", float(at), 0.5)
    store.prune(3999.0)  # drops 4000 entries: compacts
    assert store.spent_since("d", -1.0) == pytest.approx(500.0)
    assert store.spent_since("d", 4499.0) == pytest.approx(250.0)
    assert store.release_time("d", -1.0, 1.0) == 4001.0


entries = st.lists(
    st.tuples(st.floats(0.0, 10.0), st.floats(0.0, 5.0)), min_size=0, max_size=40
).map(lambda items: sorted(items))


@settings(max_examples=200, deadline=None)
@given(entries, st.floats(-1.0, 12.0), st.floats(-1.0, 12.0), st.floats(0.01, 60.0))
def test_matches_a_brute_force_model(
    items: list[tuple[float, float]], prune_at: float, since: float, amount: float
) -> None:
    store = InMemorySpendStore(resolution=0.0)
    for at, value in items:
        store.add("d", at, value)
    store.prune(prune_at)
    kept = [(at, value) for at, value in items if at > prune_at]
    after = [(at, value) for at, value in kept if at > since]
    assert store.spent_since("d", since) == pytest.approx(sum(v for _, v in after), abs=1e-9)
    running, expected = 0.0, None
    for at, value in after:
        running += value
        if running >= amount - 1e-12:
            expected = at
            break
    got = store.release_time("d", since, amount)
    if expected is None or got is None:
        # float rounding may differ only at an exact boundary
        assert (expected is None) == (got is None) or abs(running - amount) < 1e-9
    else:
        assert got == pytest.approx(expected)
