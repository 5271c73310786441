"""Opening the state database: WAL journal, the schema, and its version."""

from __future__ import annotations

import os
import sqlite3

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS deployments (
    name TEXT PRIMARY KEY,
    spec TEXT NOT NULL,
    source TEXT NOT NULL,
    revision INTEGER NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS spend (
    id INTEGER PRIMARY KEY,
    deployment TEXT NOT NULL,
    at REAL NOT NULL,
    amount REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS spend_by_deployment ON spend (deployment, at);
"""
MEMORY = ":memory:"
"""The path that keeps nothing across restarts (tests, throwaway servers)."""


def open_database(path: str) -> sqlite3.Connection:
    """Open (creating it and its folder when missing) and migrate the state database.

    WAL with ``synchronous=NORMAL``: a committed transaction is in the log before ``commit``
    returns, so it survives the process being killed; only a power loss may take the last ones.
    """
    if path != MEMORY:
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
    try:
        connection = sqlite3.connect(path, isolation_level=None, timeout=10.0)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        version = connection.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise ValueError(
                f"storage: {path} was written by a newer inference-runtime "
                f"(schema {version}; this version knows {SCHEMA_VERSION})"
            )
        connection.executescript(_SCHEMA)
        connection.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
    except sqlite3.Error as error:
        raise ValueError(f"storage: cannot open {path}: {error}") from None
    return connection
