"""The batch domain's assets: the observed source and `ratings_ml_training`."""


import dagster as dg

from recsys_platform.batch import checks as training_checks
from recsys_platform.batch.build import source_row_count
from recsys_platform.batch.contract import (
    COLUMN_NAMES,
    COLUMNS,
    CUSTOMER_KEY,
    DATASET,
    PRODUCT_KEY,
    RATING,
    Layout,
)
from recsys_platform.batch.engines.spark import build
from recsys_platform.defs.batch.checks import training_check_results, training_check_specs
from recsys_platform.defs.batch.partitions import partition_versions, partitions_for
from recsys_platform.defs.shared import OWNERS
from recsys_platform.errors import DataQualityError, RecsysError
from recsys_platform.resources import ObjectStoreResource, SourceDatabaseResource, SparkResource
from recsys_platform.resources.glue import GlueBatchResource
from recsys_platform.storage import lake

SOURCE_KEY = dg.AssetKey("classicmodels_ratings")
TRAINING_KEY = dg.AssetKey(DATASET)
SOURCE_VERSION = "source_version"  # observation metadata: the source version a partition was built from


def column_schema() -> dg.TableSchema:
    """The contract's columns as Dagster's column schema (types as Arrow names them)."""
    return dg.TableSchema(columns=[
        dg.TableColumn(c.name, str(c.arrow_type), description=c.description,
                       constraints=dg.TableColumnConstraints(nullable=c.nullable))
        for c in COLUMNS
    ])


def _markdown_table(rows: list[dict]) -> str:
    if not rows:
        return "_no rows_"
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join("" if r[c] is None else str(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def _preview(table, rows: int = 10) -> list[dict]:
    """The first rows of what the lake now holds, in contract column order."""
    if not table.num_rows:
        return []
    head = table.sort_by([(CUSTOMER_KEY, "ascending"), (PRODUCT_KEY, "ascending")]).slice(0, rows)
    return head.select(COLUMN_NAMES).to_pylist()


def _checked_result(context, source: SourceDatabaseResource, store, layout: Layout, keys: list[str],
                    versions: dict[str, str], run_metadata: dict) -> dg.MaterializeResult:
    """Read the published partitions back, record each one's source version, and check them
    against the contract and the source (the same for Spark local and the Glue job)."""
    written = lake.read_partitions(store, DATASET, layout.column, keys)
    per_partition: dict[str, int] = {}
    if written.num_rows:
        per_partition = {str(d["values"]): d["counts"] for d in written[layout.column].value_counts().to_pylist()}
    for key in keys:
        context.log_event(dg.AssetObservation(
            asset_key=TRAINING_KEY, partition=key,
            metadata={SOURCE_VERSION: versions.get(key, "absent"), "rows": per_partition.get(key, 0)}))
    if layout.buckets and written.num_columns:  # the bucket is a folder, not a contract column
        written = written.drop_columns([layout.column])
    products = source.db.read_arrow("products")
    outcomes = training_checks.evaluate(
        written, set(products[PRODUCT_KEY].to_pylist()), source_row_count(source.db, layout, keys))
    ratings = written[RATING].value_counts().to_pylist() if written.num_rows else []
    distribution = {str(d["values"]): d["counts"] for d in sorted(ratings, key=lambda d: d["values"])}
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": written.num_rows,
            "dagster/column_schema": column_schema(),
            "source": source.masked_url,
            "location": dg.MetadataValue.url(store.uri(DATASET)) if store.url.startswith("s3")
            else dg.MetadataValue.path(store.path(DATASET)),
            "rating_distribution": dg.MetadataValue.json(distribution),
            "preview": dg.MetadataValue.md(_markdown_table(_preview(written))),
            **run_metadata,
        },
        check_results=training_check_results(TRAINING_KEY, outcomes),
    )


def build_batch_assets(layout: Layout) -> list:
    partitions_def = partitions_for(layout)

    @dg.observable_source_asset(
        key=SOURCE_KEY,
        group_name="batch",
        partitions_def=partitions_def,
        description=(
            "The `ratings` table of the operational `classicmodels` database, joined in the lab's "
            "Glue job with `customers` and `products`. Each observation reports a data version per "
            "partition (count and checksum of the customer's ratings), so Dagster marks exactly "
            "the changed customers' training data stale."),
        tags={"dagster/kind/sql": ""},
    )
    def classicmodels_ratings(context, source: SourceDatabaseResource) -> dg.DataVersionsByPartition:
        versions = partition_versions(layout, source.db.customer_versions())
        if not layout.buckets:  # report only registered partitions; the sensor adds new ones
            known = set(context.instance.get_dynamic_partitions(partitions_def.name))
            versions = {k: v for k, v in versions.items() if k in known}
        context.log.info(f"observed {len(versions)} partition versions from {source.masked_url}")
        return dg.DataVersionsByPartition(versions)

    check_specs = training_check_specs(TRAINING_KEY)

    @dg.asset(
        key=TRAINING_KEY,
        deps=[SOURCE_KEY],
        group_name="batch",
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        check_specs=check_specs,
        kinds={"spark", "parquet"},
        owners=OWNERS,
        description=(
            "One row per rating with the customer's and the product's features: the lab's Glue "
            "join (`ratings r join products p using productCode join customers c using "
            "customerNumber`), 13 columns, snappy Parquet written by PySpark under "
            "`<lake>/ratings_ml_training/customerNumber=<n>/` (or `customer_bucket=<k>/` with hash "
            "buckets). Each partition is one file replaced atomically; a backfill of any set of "
            "customers is one Spark job. The source is validated first: a bad source writes "
            "nothing."),
        metadata={"dagster/column_schema": column_schema(), "partition_column": layout.column},
    )
    def ratings_ml_training(context: dg.AssetExecutionContext, source: SourceDatabaseResource,
                            lake_store: ObjectStoreResource, spark: SparkResource,
                            glue: GlueBatchResource) -> dg.MaterializeResult:
        keys = list(context.partition_keys)
        store = lake_store.store
        context.log.info(
            f"building {len(keys)} partition(s) from {source.masked_url} into {store.uri(DATASET)} "
            f"via {'Spark JDBC' if source.use_jdbc else 'SQLAlchemy to Arrow'}")
        # Versions first: if the source moves during the build, the recorded version is the older
        # one and the next scheduled check rebuilds the partition (never the reverse).
        versions = partition_versions(layout, source.db.customer_versions(layout.selection(keys)))
        if glue.enabled:  # the AWS profile: the same transform as a Glue job, through Dagster Pipes
            reported = glue.run(context, keys, {"RECSYS_LAKE_URL": store.url, "RECSYS_HASH_BUCKETS": str(layout.buckets)})
            return _checked_result(context, source, store, layout, keys, versions, reported)
        try:
            result = build(spark.spark_session, source.db, store, keys, layout=layout,
                           use_jdbc=source.use_jdbc, num_partitions=source.jdbc_partitions,
                           log=context.log.info)
        except DataQualityError as e:
            raise dg.Failure(description=str(e), metadata={
                "violations": dg.MetadataValue.json(e.violations)}) from None
        except RecsysError as e:
            raise dg.Failure(description=str(e)) from None

        return _checked_result(context, source, store, layout, keys, versions, {
            "partitions_written": result.written, "partitions_removed": result.removed,
            "extraction": result.extraction,
            **{k: dg.MetadataValue.float(round(v, 3)) for k, v in result.timings.items()}})

    return [classicmodels_ratings, ratings_ml_training]
