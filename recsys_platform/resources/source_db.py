"""The source database resource: SQLite (embedded default) or MySQL/MariaDB, by SQLAlchemy URL."""

from __future__ import annotations

import dagster as dg
from pydantic import PrivateAttr

from recsys_platform.batch.source import SourceDatabase, masked_url


class SourceDatabaseResource(dg.ConfigurableResource):
    """The operational `classicmodels` database.

    `jdbc_driver_jar` switches extraction to Spark JDBC (parallel reads split on customerNumber,
    as AWS Glue does); empty, rows stream through SQLAlchemy into Arrow (no JVM driver needed).
    """

    url: str
    jdbc_driver_jar: str = ""
    jdbc_driver: str = ""  # the driver class in that jar (empty: MariaDB's)
    jdbc_partitions: int = 4

    _db: SourceDatabase | None = PrivateAttr(default=None)

    @property
    def db(self) -> SourceDatabase:
        if self._db is None:
            self._db = SourceDatabase(self.url)
        return self._db

    @property
    def use_jdbc(self) -> bool:
        return bool(self.jdbc_driver_jar)

    @property
    def masked_url(self) -> str:
        return masked_url(self.url)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._db is not None:
            self._db.dispose()
