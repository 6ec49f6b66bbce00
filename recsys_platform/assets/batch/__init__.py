"""Batch domain: source observation, `ratings_ml_training`, its checks, partition sensor, schedule."""

from __future__ import annotations

import dagster as dg

from recsys_platform.assets.batch.assets import build_batch_assets
from recsys_platform.assets.batch.jobs import observe_job, training_job
from recsys_platform.assets.batch.schedules import build_batch_schedules
from recsys_platform.assets.batch.sensors import build_batch_sensors
from recsys_platform.batch.contract import Layout


def build_batch_defs(layout: Layout, engine: str, stale_cron: str) -> dg.Definitions:
    """`engine`: "arrow", "spark" or "glue" (Settings.batch_engine); `stale_cron`: RECSYS_STALE_CRON."""
    return dg.Definitions(
        assets=build_batch_assets(layout, engine),
        jobs=[training_job, observe_job],
        sensors=build_batch_sensors(layout),
        schedules=build_batch_schedules(layout, training_job, stale_cron),
    )
