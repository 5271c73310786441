"""``CatalogStore``: the desired state, one row per deployment, written before it is acted on."""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from typing import Literal

import msgspec

from inference_runtime.types import Deployment

Source = Literal["config", "api"]


@dataclass(frozen=True, slots=True)
class StoredDeployment:
    deployment: Deployment
    source: Source
    """``config``: from the config file (re-applied at every start); ``api``: the admin API."""
    revision: int
    """Bumped on every change of the spec; replicas remember the revision they run."""
    updated_at: float
    """Wall-clock time (Unix seconds) of the last change."""


class CatalogStore:
    """Deployments by name in the ``deployments`` table (one writer: the manager actor)."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._db = connection

    def load(self) -> list[StoredDeployment]:
        """Every stored deployment, by name. A row that no longer validates (written by another
        version) is skipped with its error in ``invalid``."""
        self.invalid: dict[str, str] = {}
        rows = self._db.execute(
            "SELECT name, spec, source, revision, updated_at FROM deployments ORDER BY name"
        ).fetchall()
        result = []
        for name, spec, source, revision, updated_at in rows:
            try:
                deployment = Deployment.from_dict(msgspec.json.decode(spec))
            except (ValueError, msgspec.DecodeError) as error:
                self.invalid[name] = str(error)
                continue
            result.append(StoredDeployment(deployment, source, revision, updated_at))
        return result

    def put(self, deployment: Deployment, *, source: Source) -> StoredDeployment:
        """Insert or replace; the revision goes up only when the spec changed."""
        spec = msgspec.json.encode(deployment.to_dict()).decode()
        now = time.time()
        self._db.execute("BEGIN IMMEDIATE")
        try:
            row = self._db.execute(
                "SELECT spec, revision, source FROM deployments WHERE name = ?",
                (deployment.name,),
            ).fetchone()
            revision = 1 if row is None else row[1] + (row[0] != spec)
            if row is None or row[0] != spec or row[2] != source:
                self._db.execute(
                    "INSERT OR REPLACE INTO deployments (name, spec, source, revision, updated_at)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (deployment.name, spec, source, revision, now),
                )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return StoredDeployment(deployment, source, revision, now)

    def delete(self, name: str) -> bool:
        cursor = self._db.execute("DELETE FROM deployments WHERE name = ?", (name,))
        return cursor.rowcount > 0
