"""CatalogStore: deployments by name, revisions, survival across connections."""

from __future__ import annotations

from pathlib import Path

import pytest

from inference_runtime.storage import CatalogStore, open_database
from inference_runtime.types import Deployment


def test_put_load_delete_and_revisions(tmp_path: Path) -> None:
    path = str(tmp_path / "sub" / "state.db")  # the folder is created
    store = CatalogStore(open_database(path))
    a = Deployment(name="a", runtime="fake")
    assert store.put(a, source="api").revision == 1
    assert store.put(a, source="api").revision == 1  # same spec: same revision
    bigger = Deployment(name="a", runtime="fake", replicas=3)
    assert store.put(bigger, source="api").revision == 2
    store.put(Deployment(name="b", runtime="fake"), source="config")
    again = CatalogStore(open_database(path))  # a new connection sees every committed write
    loaded = {s.deployment.name: s for s in again.load()}
    assert loaded["a"].deployment == bigger and loaded["a"].revision == 2
    assert loaded["b"].source == "config"
    assert again.delete("a") and not again.delete("a")
    assert [s.deployment.name for s in store.load()] == ["b"]


def test_a_row_that_no_longer_validates_is_skipped(tmp_path: Path) -> None:
    db = open_database(str(tmp_path / "state.db"))
    db.execute("INSERT INTO deployments VALUES ('bad', '{\"name\": \"bad\"}', 'api', 1, 0.0)")
    store = CatalogStore(db)
    assert store.load() == []
    assert "bad" in store.invalid


def test_wal_mode_and_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = str(tmp_path / "state.db")
    db = open_database(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(ValueError, match="newer"):
        open_database(path)
