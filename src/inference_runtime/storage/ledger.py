"""``SqliteSpendStore``: the budgets' spend, kept in memory for the windows and in SQLite for
restarts.

The ledger runs on the actor system's monotonic clock; the database keeps wall-clock times. The
offset between the two is taken once, when the store opens, so spend recorded before a restart
lands at the right place in the new process's windows.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable

from inference_runtime.metrics.spend import InMemorySpendStore

_KEEP_S = 86400.0 + 3600.0
"""Rows older than the longest window (a day), plus slack, are deleted on prune."""


class SqliteSpendStore:
    """A ``SpendStore`` whose every entry is committed to the ``spend`` table as it is added."""

    def __init__(
        self,
        connection: sqlite3.Connection,
        *,
        now: Callable[[], float],
        wall: Callable[[], float] = time.time,
        resolution: float = 1.0,
    ) -> None:
        self._db = connection
        self._offset = wall() - now()
        """wall-clock seconds = monotonic seconds + offset"""
        self._memory = InMemorySpendStore(resolution)
        since = wall() - _KEEP_S
        for deployment, at, amount in connection.execute(
            "SELECT deployment, at, amount FROM spend WHERE at > ? ORDER BY at, id", (since,)
        ):
            self._memory.add(deployment, at - self._offset, amount)

    def add(self, deployment: str, at: float, amount: float) -> None:
        self._db.execute(
            "INSERT INTO spend (deployment, at, amount) VALUES (?, ?, ?)",
            (deployment, at + self._offset, amount),
        )
        self._memory.add(deployment, at, amount)

    def spent_since(self, deployment: str, since: float) -> float:
        return self._memory.spent_since(deployment, since)

    def release_time(self, deployment: str, since: float, amount: float) -> float | None:
        return self._memory.release_time(deployment, since, amount)

    def prune(self, before: float) -> None:
        self._memory.prune(before)
        self._db.execute("DELETE FROM spend WHERE at <= ?", (before + self._offset,))

    def forget(self, deployment: str) -> None:
        self._memory.forget(deployment)
        self._db.execute("DELETE FROM spend WHERE deployment = ?", (deployment,))

    def deployments(self) -> frozenset[str]:
        return self._memory.deployments()
