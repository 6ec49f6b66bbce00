"""The vector store resource: the embedded PostgreSQL with pgvector, or any DSN (RDS in AWS)."""

from __future__ import annotations

import dagster as dg
from pydantic import PrivateAttr

from recsys_platform.vectors.store import VectorStore
from recsys_platform.wiring import vector_store


class VectorStoreResource(dg.ConfigurableResource):
    """The vector database: `dsn`; else the credentials of Secrets Manager's `secret_arn` at `host`
    (read at first use, never when definitions load); else the embedded server for `data_dir`,
    started on demand and reused."""

    dsn: str = ""
    secret_arn: str = ""
    host: str = ""
    database: str = "recsys"
    data_dir: str = ""
    endpoint_url: str = ""
    region: str = ""

    _store: VectorStore | None = PrivateAttr(default=None)

    @property
    def store(self) -> VectorStore:
        if self._store is None:
            self._store = vector_store(self.dsn, self.secret_arn, self.host, self.database, self.data_dir,
                                       self.endpoint_url, self.region)
        return self._store
