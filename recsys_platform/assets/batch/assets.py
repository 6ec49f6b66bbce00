"""The batch domain's assets: the observed source and `ratings_ml_training`."""


import dagster as dg
import numpy as np

from recsys_platform.assets.batch.checks import training_check_results, training_check_specs
from recsys_platform.assets.batch.partitions import partition_versions, partitions_for
from recsys_platform.assets.shared import OWNERS
from recsys_platform.batch import checks as training_checks
from recsys_platform.batch.build import source_row_count
from recsys_platform.batch.contract import (
    ARROW_SCHEMA,
    COLUMN_NAMES,
    COLUMNS,
    CUSTOMER_KEY,
    DATASET,
    PRODUCT_KEY,
    RATING,
    Layout,
)
from recsys_platform.batch.engines import arrow as arrow_engine
from recsys_platform.batch.engines import spark as spark_engine
from recsys_platform.errors import DataQualityError, RecsysError
from recsys_platform.resources import (
    GlueBatchResource,
    ObjectStoreResource,
    SourceDatabaseResource,
    SparkResource,
)
from recsys_platform.storage import lake
from recsys_platform.storage.lake import partition_file

SOURCE_KEY = dg.AssetKey("classicmodels_ratings")
TRAINING_KEY = dg.AssetKey(DATASET)
SOURCE_VERSION = "source_version"  # a partition's metadata: the source version it was built from
# The observation tag Dagster reads a data version from: what `observable_source_asset` writes for
# `DataVersionsByPartition`, here written per partition by a public multi_observable_source_asset
# (the one spec-based observation that takes owners).
DATA_VERSION_TAG = "dagster/data_version"


def column_schema() -> dg.TableSchema:
    """The contract's columns as Dagster's column schema (types as Arrow names them)."""
    return dg.TableSchema(columns=[
        dg.TableColumn(c.name, str(c.arrow_type), description=c.description,
                       constraints=dg.TableColumnConstraints(nullable=c.nullable))
        for c in COLUMNS
    ])


PREVIEW_ROWS = 3  # per partition: every partition's page shows its own first rows


def _preview_table(rows: list[dict]) -> dg.TableMetadataValue:
    return dg.MetadataValue.table(records=[dg.TableRecord(r) for r in rows], schema=column_schema())


def per_partition_metadata(written, layout: Layout, keys: list[str]) -> dict[str, dict]:
    """Each requested partition's own row count, rating distribution and preview, from what the
    lake holds (one sort and one pass, whatever the run's size)."""
    out = {k: {"dagster/row_count": 0, "rating_distribution": dg.MetadataValue.json({}),
               "preview": _preview_table([])} for k in keys}
    if not written.num_rows:
        return out
    written = written.sort_by([(layout.column, "ascending"), (CUSTOMER_KEY, "ascending"), (PRODUCT_KEY, "ascending")])
    parts = written[layout.column].to_numpy()
    ratings = written[RATING].to_numpy()
    contract = written.select(COLUMN_NAMES)
    for start, stop in lake.runs(parts):
        key = str(parts[start])
        values, counts = np.unique(ratings[start:stop], return_counts=True)
        out[key] = {
            "dagster/row_count": int(stop - start),
            "rating_distribution": dg.MetadataValue.json({str(v): int(n) for v, n in zip(values, counts)}),
            "preview": _preview_table(contract.slice(start, min(PREVIEW_ROWS, stop - start)).to_pylist()),
        }
    return out


def _checked_result(context, source: SourceDatabaseResource, store, layout: Layout, keys: list[str],
                    versions: dict[str, str], run_metadata: dict) -> dg.MaterializeResult:
    """Read the published partitions back, give each its own metadata (rows, distribution,
    preview, file, the source version it was built from: what the schedule compares),
    and check them against the contract and the source (the same for every engine and Glue)."""
    written = lake.read_partitions(store, DATASET, layout.column, keys)
    if not written.num_columns:  # every requested partition is gone (their customers left): 0 rows
        written = ARROW_SCHEMA.empty_table()
    for key, metadata in per_partition_metadata(written, layout, keys).items():
        context.add_asset_metadata({
            **metadata, SOURCE_VERSION: versions.get(key, "absent"),
            "location": _location(store, partition_file(DATASET, layout.column, key))}, partition_key=key)
    if layout.buckets and layout.column in written.column_names:  # the bucket is a folder, not a contract column
        written = written.drop_columns([layout.column])
    products = source.db.read_arrow("products")
    outcomes = training_checks.evaluate(
        written, set(products[PRODUCT_KEY].to_pylist()), source_row_count(source.db, layout, keys))
    return dg.MaterializeResult(
        metadata={  # the column schema is the definition's (every partition would repeat it)
            "source": source.masked_url,
            "run_rows": written.num_rows,
            "run_partitions": len(keys),
            "dataset_location": _location(store, DATASET),
            **run_metadata,
        },
        check_results=training_check_results(TRAINING_KEY, outcomes),
    )


def _location(store, key: str):
    return dg.MetadataValue.url(store.uri(key)) if store.url.startswith("s3") else dg.MetadataValue.path(store.path(key))


ENGINE_NAMES = {"arrow": "Arrow engine (connectorx + pyarrow, one machine)",
                "spark": "Spark engine (PySpark: local, a cluster, EMR)",
                "glue": "Glue job (the Spark engine on AWS Glue, through Dagster Pipes)"}


def build_batch_assets(layout: Layout, engine: str = "arrow") -> list:
    """`engine`: "arrow", "spark" or "glue" (Settings.batch_engine: RECSYS_ENGINE resolved)."""
    partitions_def = partitions_for(layout)

    @dg.multi_observable_source_asset(
        specs=[dg.AssetSpec(
            SOURCE_KEY, group_name="batch", owners=OWNERS, kinds={"sql"},
            description=(
                "The `ratings` table of the operational `classicmodels` database, joined in the lab's "
                "Glue job with `customers` and `products`. Each observation reports a data version per "
                "partition (count and checksum of the customer's ratings), so Dagster marks exactly "
                "the changed customers' training data stale. The table is observed, never materialized "
                "by Dagster: its partition bar ('0% filled', every partition 'missing') counts "
                "materializations only; each partition's observed version is in its Observations."))],
        name="classicmodels_ratings",
        partitions_def=partitions_def,
    )
    def classicmodels_ratings(context: dg.AssetExecutionContext, source: SourceDatabaseResource):
        versions = partition_versions(layout, source.db.customer_versions())
        if not layout.buckets:  # report only registered partitions; the sensor adds new ones
            known = set(context.instance.get_dynamic_partitions(partitions_def.name))
            versions = {k: v for k, v in versions.items() if k in known}
        for key, version in versions.items():
            context.log_event(dg.AssetObservation(SOURCE_KEY, partition=key, tags={DATA_VERSION_TAG: version}))
        context.log.info(f"observed {len(versions)} partition versions from {source.masked_url}")
        return dg.ObserveResult(metadata={"partitions_observed": len(versions), "source": source.masked_url})

    check_specs = training_check_specs(TRAINING_KEY)

    @dg.asset(
        key=TRAINING_KEY,
        deps=[SOURCE_KEY],
        group_name="batch",
        partitions_def=partitions_def,
        backfill_policy=dg.BackfillPolicy.single_run(),
        check_specs=check_specs,
        kinds={"parquet", engine},
        owners=OWNERS,
        description=(
            "One row per rating with the customer's and the product's features: the lab's Glue "
            "join (`ratings r join products p using productCode join customers c using "
            "customerNumber`), 13 columns, snappy Parquet under "
            "`<lake>/ratings_ml_training/customerNumber=<n>/` (or `customer_bucket=<k>/` with hash "
            f"buckets), built by the {ENGINE_NAMES[engine]}. Each partition is one file replaced "
            "atomically, byte for byte the same whichever engine wrote it; a backfill of any set "
            "of customers is one run. The source is validated first: a bad source writes nothing."),
        metadata={"dagster/column_schema": column_schema(), "partition_column": layout.column, "engine": engine},
    )
    def ratings_ml_training(context: dg.AssetExecutionContext, source: SourceDatabaseResource,
                            lake_store: ObjectStoreResource, spark: SparkResource,
                            glue: GlueBatchResource) -> dg.MaterializeResult:
        keys = list(context.partition_keys)
        store = lake_store.store
        context.log.info(f"building {len(keys)} partition(s) from {source.masked_url} into "
                         f"{store.uri(DATASET)} with the {ENGINE_NAMES[engine]}")
        # Versions first: if the source moves during the build, the recorded version is the older
        # one and the next scheduled check rebuilds the partition (never the reverse).
        versions = partition_versions(layout, source.db.customer_versions(layout.selection(keys)))
        if glue.enabled:  # the AWS profile: the same transform as a Glue job, through Dagster Pipes
            reported = glue.run(context, keys, {"RECSYS_LAKE_URL": store.url, "RECSYS_HASH_BUCKETS": str(layout.buckets)})
            return _checked_result(context, source, store, layout, keys, versions, reported)
        try:
            if engine == "spark":
                result = spark_engine.build(spark.spark_session, source.db, store, keys, layout=layout,
                                            use_jdbc=source.use_jdbc, num_partitions=source.jdbc_partitions,
                                            driver=source.jdbc_driver, log=context.log.info)
            else:
                result = arrow_engine.build(source.db, store, keys, layout=layout, log=context.log.info)
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
