"""The one `Definitions` of the platform: every domain's objects plus resources for the profile."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from recsys_platform.batch.contract import Layout
from recsys_platform.defs.batch import build_batch_defs
from recsys_platform.defs.ml import MODEL_KEY, build_ml_defs
from recsys_platform.defs.shared import LOGGERS
from recsys_platform.defs.streaming import build_streaming_defs
from recsys_platform.defs.vectors import ITEM_KEY, USER_KEY, build_vector_defs
from recsys_platform.resources import (
    ObjectStoreResource,
    SourceDatabaseResource,
    SparkResource,
    VectorStoreResource,
)
from recsys_platform.resources.glue import GlueBatchResource
from recsys_platform.resources.spark import spark_config
from recsys_platform.settings import Settings
from recsys_platform.storage.object_store import ObjectStore
from recsys_platform.streaming.recommendations import earliest_hour


def _code_for_a_cluster(settings: Settings) -> str:
    """The package zip a Spark cluster's executors import (local mode needs none)."""
    if settings.spark_master.startswith("local"):
        return ""
    from recsys_platform.deploy.packaging import code_zip

    return str(code_zip(f"{settings.home}/spark-code"))


def _glue_work_dir(settings: Settings) -> str:
    """The packaged Glue job the local launcher runs (RECSYS_GLUE_LAUNCHER=local)."""
    work_dir = f"{settings.home}/glue-local"
    if settings.glue_job and settings.glue_launcher == "local":
        from recsys_platform.deploy.packaging import code_zip

        code_zip(work_dir)
    return work_dir


def build_resources(settings: Settings, keep_spark: bool = False) -> dict:
    """Resources for a profile. The embedded default and AWS differ only in these URLs."""
    return {
        "source": SourceDatabaseResource(url=settings.source_url, jdbc_driver_jar=settings.jdbc_driver_jar),
        "lake_store": ObjectStoreResource(url=settings.lake_url, endpoint_url=settings.aws_endpoint_url),
        "artifacts_store": ObjectStoreResource(url=settings.artifacts_url, endpoint_url=settings.aws_endpoint_url),
        "recommendations_store": ObjectStoreResource(url=settings.recommendations_url,
                                                     endpoint_url=settings.aws_endpoint_url),
        "vector_store": VectorStoreResource(dsn=settings.vector_dsn, data_dir=settings.pgdata),
        "glue": GlueBatchResource(job_name=settings.glue_job, pipes_bucket=settings.pipes_bucket,
                                  endpoint_url=settings.aws_endpoint_url, launcher=settings.glue_launcher,
                                  arguments_json=settings.glue_arguments, work_dir=_glue_work_dir(settings)),
        "spark": SparkResource(
            spark_config=spark_config(settings.spark_master, jars=settings.jdbc_driver_jar,
                                      py_files=_code_for_a_cluster(settings), endpoint_url=settings.aws_endpoint_url),
            stop_after_run=not keep_spark),
    }


def stream_start(settings: Settings) -> dt.datetime:
    """The first hour of `recommendations`: RECSYS_STREAM_START, else the bucket's first hour
    with objects, else the start of today (UTC); the UI then shows hours that can hold data."""
    if settings.stream_start:
        fmt = "%Y-%m-%d-%H" if settings.stream_start.count("-") == 3 else "%Y-%m-%d"
        return dt.datetime.strptime(settings.stream_start, fmt).replace(tzinfo=dt.timezone.utc)
    first = earliest_hour(ObjectStore.from_url(settings.recommendations_url, endpoint_url=settings.aws_endpoint_url))
    return first or dt.datetime.now(dt.timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)


def build_definitions(settings: Settings, keep_spark: bool = False) -> dg.Definitions:
    layout = Layout(buckets=settings.hash_buckets)
    model_job = dg.define_asset_job(
        "model_and_vectors_job", selection=[MODEL_KEY, ITEM_KEY, USER_KEY],
        description="Trains, evaluates and publishes the model, then loads and switches the vectors.")
    return dg.Definitions.merge(
        build_batch_defs(layout, settings.batch_engine, settings.stale_cron),
        build_ml_defs(layout),
        build_vector_defs(),
        build_streaming_defs(stream_start(settings)),
        dg.Definitions(jobs=[model_job], resources=build_resources(settings, keep_spark=keep_spark), loggers=LOGGERS),
    )


@dg.definitions
def defs() -> dg.Definitions:
    """Loaded by `dagster dev` / `dagster asset materialize`: settings come from the environment."""
    return build_definitions(Settings.from_env())
