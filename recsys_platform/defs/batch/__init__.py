"""Batch domain: source observation, `ratings_ml_training`, its checks, partition sensor, schedule."""

from __future__ import annotations

import dagster as dg

from recsys_platform.batch.contract import Layout
from recsys_platform.defs.batch.assets import SOURCE_KEY, TRAINING_KEY, build_batch_assets
from recsys_platform.defs.batch.schedules import build_batch_schedules
from recsys_platform.defs.batch.sensors import build_batch_sensors
from recsys_platform.settings import DEFAULT_STALE_CRON

OBSERVE_JOB = "classicmodels_ratings_observation"


# Runs with this tag share the run queue's one slot for the batch engine (deploy/dagster_instance.py):
# two Spark or Glue builds at once would only compete for the same cluster and source.
BATCH_ENGINE_TAG = {"recsys/queue": "batch-engine"}


def build_batch_defs(layout: Layout, engine: str = "arrow", stale_cron: str = DEFAULT_STALE_CRON) -> dg.Definitions:
    assets = build_batch_assets(layout, engine)
    observe_job = dg.define_asset_job(
        OBSERVE_JOB, selection=[SOURCE_KEY],
        description="Observes the source: records each partition's data version (count and checksum of its ratings).")
    training_job = dg.define_asset_job(
        "ratings_ml_training_job", selection=[TRAINING_KEY],
        description="Builds `ratings_ml_training` partitions with their checks (one engine run per run).",
        tags=BATCH_ENGINE_TAG)
    return dg.Definitions(
        assets=assets,
        jobs=[training_job, observe_job],
        sensors=build_batch_sensors(layout),
        schedules=build_batch_schedules(layout, training_job, stale_cron),
    )
