"""The vector store resource: the embedded PostgreSQL with pgvector, or any DSN (RDS in AWS)."""

from __future__ import annotations

import dagster as dg
from pydantic import PrivateAttr

from recsys_platform.vectors.embedded import embedded_dsn
from recsys_platform.vectors.store import VectorStore


class VectorStoreResource(dg.ConfigurableResource):
    """`dsn` empty: the embedded server for `data_dir`, started on demand and reused."""

    dsn: str = ""
    data_dir: str = ""

    _store: VectorStore | None = PrivateAttr(default=None)

    @property
    def store(self) -> VectorStore:
        if self._store is None:
            self._store = VectorStore(self.dsn or embedded_dsn(self.data_dir))
        return self._store
