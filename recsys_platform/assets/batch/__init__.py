"""Batch domain: source observation, `ratings_ml_training`, its checks, partition sensor, schedule."""

from __future__ import annotations

import dagster as dg

from recsys_platform.assets.batch.assets import TRAINING_KEY, build_batch_assets
from recsys_platform.assets.batch.schedules import build_batch_schedules
from recsys_platform.assets.batch.sensors import build_batch_sensors
from recsys_platform.core.batch import Layout


def build_batch_defs(layout: Layout) -> dg.Definitions:
    assets = build_batch_assets(layout)
    training_job = dg.define_asset_job(
        "ratings_ml_training_job", selection=[TRAINING_KEY],
        description="Builds `ratings_ml_training` partitions with their checks (one Spark job per run).")
    return dg.Definitions(
        assets=assets,
        jobs=[training_job],
        sensors=build_batch_sensors(layout),
        schedules=build_batch_schedules(layout, training_job),
    )
