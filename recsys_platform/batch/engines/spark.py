"""The Spark engine: the lab's Glue transform in PySpark, the source rules, and the build.

Pure functions from DataFrames to DataFrames (plus the quality rules), so that Spark local,
a Spark cluster, AWS Glue and the tests all run exactly this code. Types, columns and the bucket
rule come from `batch.contract`.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Sequence

import sqlalchemy as sa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T
from sqlalchemy.engine import make_url

from recsys_platform.batch.build import BuildResult, Violation, reconcile, refuse
from recsys_platform.batch.contract import (
    BUCKET_COLUMN,
    COLUMNS,
    CUSTOMER_KEY,
    CUSTOMER_KEYED,
    DATASET,
    KEY_COLUMNS,
    PRODUCT_KEY,
    RATING,
    RATING_MAX,
    RATING_MIN,
    SOURCE_KEYS,
    Layout,
    Selection,
    source_columns,
)
from recsys_platform.batch.source import SourceDatabase, customer_filter
from recsys_platform.errors import ConfigError
from recsys_platform.storage import lake
from recsys_platform.storage.object_store import ObjectStore

SPARK_TYPES = {"int32": T.IntegerType(), "float64": T.DoubleType(), "string": T.StringType()}
# The 13 columns of `ratings_ml_training`, in order, as Spark types.
TRAINING_SCHEMA = T.StructType([T.StructField(c.name, SPARK_TYPES[c.type], c.nullable) for c in COLUMNS])
MARIADB_DRIVER = "org.mariadb.jdbc.Driver"  # Debian's mariadb-java-client (local runs, tests)


def build_training_data(ratings: DataFrame, customers: DataFrame, products: DataFrame) -> DataFrame:
    """`ratings r join products p using productCode join customers c using customerNumber`,
    projected and cast to TRAINING_SCHEMA."""
    joined = ratings.join(products, on=PRODUCT_KEY, how="inner").join(customers, on=CUSTOMER_KEY, how="inner")
    return joined.select([F.col(f.name).cast(f.dataType).alias(f.name) for f in TRAINING_SCHEMA.fields])


def with_bucket(df: DataFrame, buckets: int) -> DataFrame:
    """Adds `customer_bucket = customerNumber mod buckets`, the same rule the source filter uses."""
    return df.withColumn(BUCKET_COLUMN, F.pmod(F.col(CUSTOMER_KEY), F.lit(buckets)).cast("int"))


def _example(df: DataFrame) -> str:
    row = df.limit(1).collect()[0].asDict()
    return ", ".join(f"{k}={v!r}" for k, v in row.items())


def find_violations(ratings: DataFrame, customers: DataFrame, products: DataFrame,
                    enforced: Collection[str] = ()) -> list[Violation]:
    """The source rules the training data depends on; an empty list means it is safe to publish.

    Counts come from three passes (one aggregate, one group-by, one pair of anti joins); an
    example row is fetched only for a rule that is broken. `enforced`: rules the source database
    guarantees (`SourceDatabase.enforced_rules`); the group-by, a shuffle of every rating, is
    skipped when its key makes duplicates impossible.
    """
    out: list[Violation] = []
    out_of_range = (F.col(RATING) < RATING_MIN) | (F.col(RATING) > RATING_MAX)
    rules = {("null_keys", c): F.col(c).isNull() for c in KEY_COLUMNS}
    rules[("rating_range", RATING)] = out_of_range
    counts = ratings.agg(*[F.sum(F.when(cond, 1).otherwise(0)).alias(f"{c}|{col}")
                           for (c, col), cond in rules.items()]).collect()[0].asDict()
    for (check, column), cond in rules.items():
        n = counts[f"{check}|{column}"] or 0
        if n:
            out.append(Violation(check, "ratings", column, n, _example(ratings.where(cond))))

    if "unique_ratings" not in enforced:
        dupes = ratings.groupBy(CUSTOMER_KEY, PRODUCT_KEY).count().where(F.col("count") > 1).cache()
        n = dupes.count()
        if n:
            out.append(Violation("unique_ratings", "ratings", f"{CUSTOMER_KEY}, {PRODUCT_KEY}", n, _example(dupes)))
        dupes.unpersist()

    orphans = {
        key: ratings.join(table.select(key), key, "left_anti").where(F.col(key).isNotNull())
        for key, table in ((PRODUCT_KEY, products), (CUSTOMER_KEY, customers))
    }
    tagged = [df.select(F.lit(col).alias("_rule")) for col, df in orphans.items()]
    orphan_counts = {r["_rule"]: r["count"] for r in tagged[0].unionByName(tagged[1]).groupBy("_rule").count().collect()}
    for column, df in orphans.items():
        if orphan_counts.get(column):
            out.append(Violation("referential_integrity", "ratings", column, orphan_counts[column], _example(df)))
    return out


# -- extraction ---------------------------------------------------------------------------------
def jdbc_options(url: str, driver: str = "") -> dict[str, str]:
    """Spark JDBC options for a MySQL/MariaDB SQLAlchemy URL: a jdbc:mysql:// URL and `driver`
    (empty: MariaDB's; the Glue job passes MySQL Connector/J's, which Glue has)."""
    driver = driver or MARIADB_DRIVER
    u = make_url(url)
    if not u.drivername.startswith(("mysql", "mariadb")):
        raise ConfigError(
            f"Spark JDBC extraction supports MySQL/MariaDB URLs only, got {u.drivername}; "
            "unset RECSYS_JDBC_DRIVER_JAR to extract through SQLAlchemy")
    # A jdbc:mariadb:// URL breaks column quoting in Spark's MySQL dialect; jdbc:mysql:// with the
    # MariaDB driver class works (permitMysqlScheme lets MariaDB's driver accept it).
    jdbc = f"jdbc:mysql://{u.host or 'localhost'}:{u.port or 3306}/{u.database}"
    if driver == MARIADB_DRIVER:
        jdbc += "?permitMysqlScheme"
    opts = {"url": jdbc, "driver": driver, "user": u.username or "", "fetchsize": "10000"}
    if u.password:
        opts["password"] = u.password
    return opts


def extract_jdbc(spark: SparkSession, source: SourceDatabase, table: str, selection: Selection,
                 num_partitions: int = 4, driver: str = "") -> DataFrame:
    """Read a source table the way Glue does: Spark JDBC, split on customerNumber when keyed."""
    cols = ", ".join(source_columns(table))
    keyed = table in CUSTOMER_KEYED
    # JDBC's dbtable takes no bind parameters: the selection's validated integers are written out.
    clause, _ = customer_filter(selection, inline=True) if keyed else ("", {})
    reader = spark.read.format("jdbc").options(**jdbc_options(source.url, driver)).option(
        "dbtable", f"(SELECT {cols} FROM {table}{clause}) AS src")
    if keyed and num_partitions > 1:
        with source.connect() as conn:
            lo, hi = conn.execute(sa.text(f"SELECT MIN({CUSTOMER_KEY}), MAX({CUSTOMER_KEY}) FROM {table}{clause}")).one()
        if lo is not None and hi is not None and hi > lo:
            reader = reader.options(partitionColumn=CUSTOMER_KEY, lowerBound=str(lo),
                                    upperBound=str(hi + 1), numPartitions=str(num_partitions))
    return reader.load()


def extract_arrow(spark: SparkSession, source: SourceDatabase, table: str, selection: Selection) -> DataFrame:
    """Read a source table through SQLAlchemy, streamed into Arrow, handed to Spark."""
    return spark.createDataFrame(source.read_arrow(table, selection if table in CUSTOMER_KEYED else None))


def extract(spark: SparkSession, source: SourceDatabase, selection: Selection, use_jdbc: bool,
            num_partitions: int = 4, driver: str = "") -> tuple[DataFrame, DataFrame, DataFrame]:
    """(ratings, customers, products), in SOURCE_KEYS order, filtered to the selection."""
    if use_jdbc:
        return tuple(extract_jdbc(spark, source, t, selection, num_partitions, driver) for t in SOURCE_KEYS)
    return tuple(extract_arrow(spark, source, t, selection) for t in SOURCE_KEYS)


# -- the build ----------------------------------------------------------------------------------
def build(spark: SparkSession, source: SourceDatabase, store: ObjectStore, keys: Sequence[str],
          layout: Layout = Layout(), use_jdbc: bool = False,
          num_partitions: int = 4, log=print, driver: str = "") -> BuildResult:
    """Replace the partitions `keys` of `<store>/ratings_ml_training/` with fresh data.

    Validates the source first: on any violation raises DataQualityError and writes nothing.
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    source.validate_schema()
    ratings, customers, products = extract(spark, source, layout.selection(keys), use_jdbc, num_partitions, driver)
    ratings = ratings.cache()
    timings["extract_s"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    enforced = source.enforced_rules()
    for rule, by in enforced.items():
        log(f"{rule}: guaranteed by {by}, not checked again")
    violations = find_violations(ratings, customers, products, enforced)
    if violations:
        ratings.unpersist()
        refuse(violations)
    timings["validate_s"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    df = build_training_data(ratings, customers, products)
    if layout.buckets:
        df = with_bucket(df, layout.buckets)
    # Each partition (a customer or a bucket) is encoded and published by the Spark task that
    # holds it, straight into its final place: one atomic object per partition, in parallel.
    # Sorted, so a partition's rows arrive together and the same source gives the same bytes.
    writer = lake.PartitionWriter(store.url, store.endpoint_url, DATASET, layout.column, prepare=layout.prepare)
    ordered = df.repartition(layout.column).sortWithinPartitions(layout.column, CUSTOMER_KEY, PRODUCT_KEY)
    written = ordered.mapInArrow(writer.as_function(), writer.RESULT_SCHEMA).collect()
    ratings.unpersist()
    timings["transform_write_s"] = time.perf_counter() - t2
    counts = {r["key"]: int(r["rows"]) for r in written}
    return reconcile(store, keys, counts, layout, "spark-jdbc" if use_jdbc else "sqlalchemy-arrow", timings, log)
