"""SqliteSpendStore: spend survives a restart, on the new process's monotonic clock."""

from __future__ import annotations

from pathlib import Path

from inference_runtime.metrics import BudgetLedger
from inference_runtime.storage import SqliteSpendStore, open_database
from inference_runtime.types import Budget


class Clocks:
    def __init__(self, mono: float, wall: float) -> None:
        self.mono, self.wall = mono, wall

    def advance(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


def test_spend_survives_a_restart_with_another_monotonic_origin(tmp_path: Path) -> None:
    path = str(tmp_path / "state.db")
    first = Clocks(mono=100.0, wall=1_000_000.0)
    store = SqliteSpendStore(open_database(path), now=lambda: first.mono, wall=lambda: first.wall)
    store.add("d", first.mono, 2.0)
    first.advance(1800)
    store.add("d", first.mono, 3.0)
    first.advance(60)

    # the new process's monotonic clock starts elsewhere; the wall clock went on
    second = Clocks(mono=5.0, wall=first.wall + 10)
    again = SqliteSpendStore(open_database(path), now=lambda: second.mono, wall=lambda: second.wall)
    hour_ago = second.mono - 3600
    assert again.spent_since("d", hour_ago) == 5.0
    second.advance(1800)  # the first entry leaves the hour window
    assert again.spent_since("d", second.mono - 3600) == 3.0


def test_a_budget_holds_across_a_restart(tmp_path: Path) -> None:
    path = str(tmp_path / "state.db")
    clocks = Clocks(mono=0.0, wall=2_000_000.0)
    budget = Budget(max_spend_per_hour=10.0)
    store = SqliteSpendStore(open_database(path), now=lambda: clocks.mono, wall=lambda: clocks.wall)
    ledger = BudgetLedger(lambda: clocks.mono, store)
    ledger.configure("d", budget)
    ledger.settle(ledger.reserve("d", 9.0).reservation, "d", 9.0)
    clocks.advance(1)
    store2 = SqliteSpendStore(
        open_database(path), now=lambda: clocks.mono, wall=lambda: clocks.wall
    )
    ledger2 = BudgetLedger(lambda: clocks.mono, store2)
    ledger2.configure("d", budget)
    assert ledger2.spent("d")["hour"] == 9.0
    import pytest

    from inference_runtime.errors import BudgetExceeded

    with pytest.raises(BudgetExceeded):
        ledger2.reserve("d", 2.0)


def test_prune_and_forget_reach_the_database(tmp_path: Path) -> None:
    path = str(tmp_path / "state.db")
    clocks = Clocks(mono=0.0, wall=3_000_000.0)
    db = open_database(path)
    store = SqliteSpendStore(db, now=lambda: clocks.mono, wall=lambda: clocks.wall)
    store.add("old", 0.0, 1.0)
    store.add("gone", 0.0, 1.0)
    clocks.advance(90_000)
    store.add("old", clocks.mono, 2.0)
    store.prune(clocks.mono - 86_400)
    store.forget("gone")
    rows = db.execute("SELECT deployment, amount FROM spend ORDER BY id").fetchall()
    assert rows == [("old", 2.0)]
