"""Builds `ratings_ml_training` partitions: extract, validate, transform, stage, publish.

No Dagster import: the asset, the benchmarks and (in the AWS profile) the Glue job call `build`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from pyspark.sql import DataFrame, SparkSession
from sqlalchemy.engine import make_url

from recsys_platform.core import lake
from recsys_platform.core.errors import ConfigError, DataQualityError
from recsys_platform.core.object_store import ObjectStore
from recsys_platform.core.source import SOURCE_COLUMNS, SourceDatabase, customer_filter
from recsys_platform.core.training_data import (
    BUCKET_COLUMN,
    build_training_data,
    find_violations,
    with_bucket,
)

DATASET = "ratings_ml_training"
MARIADB_DRIVER = "org.mariadb.jdbc.Driver"


@dataclass(frozen=True)
class Layout:
    """How customers map to folders: one per customer, or `customer_bucket=<k>` of `buckets`."""

    buckets: int = 0

    @property
    def column(self) -> str:
        return BUCKET_COLUMN if self.buckets else "customerNumber"

    def filter(self, keys: Sequence[str] | None) -> dict:
        if keys is None:
            return {"customers": None}
        if self.buckets:
            return {"bucket": (self.buckets, [int(k) for k in keys])}
        return {"customers": [int(k) for k in keys]}

    def partition_keys(self, customer_numbers: Sequence[int]) -> list[str]:
        if self.buckets:
            return [str(k) for k in range(self.buckets)]
        return [str(c) for c in customer_numbers]


@dataclass
class BuildResult:
    rows: int
    partitions: dict[str, str]
    rows_per_partition: dict[str, int]
    extraction: str
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def written(self) -> int:
        return sum(1 for s in self.partitions.values() if s == "written")

    @property
    def removed(self) -> int:
        return sum(1 for s in self.partitions.values() if s == "removed")


# -- extraction ---------------------------------------------------------------------------------
def jdbc_options(url: str) -> dict[str, str]:
    """Spark JDBC options for a MySQL/MariaDB SQLAlchemy URL (the MariaDB driver, mysql scheme)."""
    u = make_url(url)
    if not u.drivername.startswith(("mysql", "mariadb")):
        raise ConfigError(
            f"Spark JDBC extraction supports MySQL/MariaDB URLs only, got {u.drivername}; "
            "unset RECSYS_JDBC_DRIVER_JAR to extract through SQLAlchemy")
    # A jdbc:mariadb:// URL breaks column quoting in Spark's MySQL dialect; jdbc:mysql:// with the
    # MariaDB driver class works (permitMysqlScheme lets MariaDB's driver accept it).
    jdbc = f"jdbc:mysql://{u.host or 'localhost'}:{u.port or 3306}/{u.database}?permitMysqlScheme"
    opts = {"url": jdbc, "driver": MARIADB_DRIVER, "user": u.username or "", "fetchsize": "10000"}
    if u.password:
        opts["password"] = u.password
    return opts


def extract_jdbc(spark: SparkSession, source: SourceDatabase, table: str, where: dict,
                 num_partitions: int = 4) -> DataFrame:
    """Read a source table the way Glue does: Spark JDBC, split on customerNumber when keyed."""
    cols = ", ".join(SOURCE_COLUMNS[table])
    keyed = table in ("ratings", "customers")
    clause, params = customer_filter(where.get("customers"), where.get("bucket")) if keyed else ("", {})
    for name, value in params.items():  # bucket filters: only integers, inlined for JDBC
        clause = clause.replace(f":{name}", str(int(value)))
    reader = spark.read.format("jdbc").options(**jdbc_options(source.url)).option(
        "dbtable", f"(SELECT {cols} FROM {table}{clause}) AS src")
    if keyed and num_partitions > 1:
        with source.connect() as conn:
            import sqlalchemy as sa

            lo, hi = conn.execute(sa.text(f"SELECT MIN(customerNumber), MAX(customerNumber) FROM {table}{clause}")).one()
        if lo is not None and hi is not None and hi > lo:
            reader = reader.options(partitionColumn="customerNumber", lowerBound=str(lo),
                                    upperBound=str(hi + 1), numPartitions=str(num_partitions))
    return reader.load()


def extract_arrow(spark: SparkSession, source: SourceDatabase, table: str, where: dict) -> DataFrame:
    """Read a source table through SQLAlchemy, streamed into Arrow, handed to Spark."""
    kwargs = where if table in ("ratings", "customers") else {}
    return spark.createDataFrame(source.read_arrow(table, **kwargs))


def extract(spark: SparkSession, source: SourceDatabase, where: dict, use_jdbc: bool,
            num_partitions: int = 4) -> tuple[DataFrame, DataFrame, DataFrame]:
    if use_jdbc:
        return tuple(extract_jdbc(spark, source, t, where, num_partitions) for t in ("ratings", "customers", "products"))
    return tuple(extract_arrow(spark, source, t, where) for t in ("ratings", "customers", "products"))


# -- the build ----------------------------------------------------------------------------------
def build(spark: SparkSession, source: SourceDatabase, store: ObjectStore, keys: Sequence[str],
          layout: Layout = Layout(), use_jdbc: bool = False,
          num_partitions: int = 4, log=print) -> BuildResult:
    """Replace the partitions `keys` of `<store>/ratings_ml_training/` with fresh data.

    Validates the source first: on any violation raises DataQualityError and writes nothing.
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    source.validate_schema()
    where = layout.filter(keys)
    ratings, customers, products = extract(spark, source, where, use_jdbc, num_partitions)
    ratings = ratings.cache()
    timings["extract_s"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    violations = find_violations(ratings, customers, products)
    if violations:
        ratings.unpersist()
        raise DataQualityError(
            "the source breaks the training-data contract, nothing was written: "
            + "; ".join(str(v) for v in violations), [v.as_dict() for v in violations])
    timings["validate_s"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    df = build_training_data(ratings, customers, products)
    if layout.buckets:
        df = with_bucket(df, layout.buckets)
    # Each partition (a customer or a bucket) is encoded and published by the Spark task that
    # holds it, straight into its final place: one atomic object per partition, in parallel.
    # Sorted, so a partition's rows arrive together and the same source gives the same bytes.
    writer = lake.PartitionWriter(store.url, store.endpoint_url, DATASET, layout.column)
    ordered = df.repartition(layout.column).sortWithinPartitions(layout.column, "customerNumber", "productCode")
    written = ordered.mapInArrow(writer.as_function(), writer.RESULT_SCHEMA).collect()
    ratings.unpersist()
    counts = {r["key"]: int(r["rows"]) for r in written}
    timings["transform_write_s"] = time.perf_counter() - t2
    extra = set(counts) - set(keys)
    if extra:  # cannot happen with a correct filter; refuse to hide it
        raise RuntimeError(f"extraction returned rows outside the requested partitions: {sorted(extra)[:5]}")

    t3 = time.perf_counter()
    partitions = {k: "written" for k in counts}
    partitions.update(lake.remove_partitions(store, DATASET, layout.column, [k for k in keys if k not in counts]))
    timings["publish_s"] = time.perf_counter() - t3
    rows = sum(counts.values())
    log(f"{DATASET}: {rows} rows in {len(partitions)} partitions ({timings})")
    return BuildResult(rows, partitions, {k: counts.get(k, 0) for k in keys},
                       "spark-jdbc" if use_jdbc else "sqlalchemy-arrow", timings)


def source_row_count(source: SourceDatabase, layout: Layout, keys: Sequence[str]) -> int:
    """Ratings in the source for these partitions that join to a product and a customer."""
    return source.count_ratings(**layout.filter(keys))


__all__ = ["DATASET", "Layout", "BuildResult", "build", "extract", "jdbc_options", "source_row_count"]
