"""The one `Definitions` of the platform: every domain's objects plus resources for the profile.

Loading builds objects and nothing else: no bucket is listed, no file written, no network used
(the first hourly partition is a setting; a cluster's code zip and the local Glue job are
packaged by the run that needs them). A storage outage therefore fails runs, never the code
location, the UI or the daemon.
"""

from __future__ import annotations

import dagster as dg

from recsys_platform.assets.batch import build_batch_defs
from recsys_platform.assets.feedback import build_feedback_defs
from recsys_platform.assets.ml import build_ml_defs
from recsys_platform.assets.shared import LOGGERS
from recsys_platform.assets.streaming import build_streaming_defs
from recsys_platform.assets.vectors import build_vector_defs
from recsys_platform.batch.contract import Layout
from recsys_platform.batch.engines.spark_config import spark_config
from recsys_platform.resources import (
    GlueBatchResource,
    ObjectStoreResource,
    SourceDatabaseResource,
    SparkResource,
    VectorStoreResource,
)
from recsys_platform.settings import Settings


def build_resources(settings: Settings, keep_spark: bool = False) -> dict:
    """Resources for a profile. The embedded default and AWS differ only in these values."""
    def bucket(url: str) -> ObjectStoreResource:
        return ObjectStoreResource(url=url, endpoint_url=settings.aws_endpoint_url, region=settings.aws_region)

    return {
        "source": SourceDatabaseResource(url=settings.source_url, jdbc_driver_jar=settings.jdbc_driver_jar,
                                         jdbc_driver=settings.jdbc_driver),
        "lake_store": bucket(settings.lake_url),
        "artifacts_store": bucket(settings.artifacts_url),
        "recommendations_store": bucket(settings.recommendations_url),
        "vector_store": VectorStoreResource(dsn=settings.vector_dsn, secret_arn=settings.vector_secret_arn,
                                            host=settings.vector_host, database=settings.vector_db,
                                            data_dir=settings.pgdata, endpoint_url=settings.aws_endpoint_url,
                                            region=settings.aws_region),
        "glue": GlueBatchResource(job_name=settings.glue_job, pipes_bucket=settings.pipes_bucket,
                                  endpoint_url=settings.aws_endpoint_url, region=settings.aws_region,
                                  launcher=settings.glue_launcher, arguments=settings.glue_arguments,
                                  work_dir=f"{settings.home}/glue-local"),
        "spark": SparkResource(spark_config=spark_config(settings.spark_master, jars=settings.jdbc_driver_jar),
                               code_dir=f"{settings.home}/spark-code", endpoint_url=settings.aws_endpoint_url,
                               region=settings.aws_region, stop_after_run=not keep_spark),
    }


def build_definitions(settings: Settings, keep_spark: bool = False) -> dg.Definitions:
    layout = Layout(buckets=settings.hash_buckets)
    return dg.Definitions.merge(
        build_batch_defs(layout, settings.batch_engine, settings.stale_cron),
        build_ml_defs(layout),
        build_vector_defs(settings.catalog_cron, settings.retrain_interactions, settings.retrain_min_minutes),
        build_streaming_defs(settings.stream_start),
        build_feedback_defs(settings.stream_start),
        dg.Definitions(resources=build_resources(settings, keep_spark=keep_spark), loggers=LOGGERS),
    )


@dg.definitions
def defs() -> dg.Definitions:
    """Loaded by `dagster dev` / `dagster asset materialize` / `dg`: settings from the environment."""
    return build_definitions(Settings.from_env())
