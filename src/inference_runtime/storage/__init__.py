"""Durable state: the deployment catalog and the spend ledger, in one SQLite file (WAL).

A write is committed before the caller goes on, so whatever the API acknowledged survives a
crash of the process (``kill -9``).
"""

from inference_runtime.storage.catalog import CatalogStore, StoredDeployment
from inference_runtime.storage.database import open_database
from inference_runtime.storage.ledger import SqliteSpendStore

__all__ = ["CatalogStore", "SqliteSpendStore", "StoredDeployment", "open_database"]
