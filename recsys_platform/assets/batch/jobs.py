"""The batch domain's jobs: observing the source, and building training-data partitions."""

from __future__ import annotations

import dagster as dg

from recsys_platform.assets.batch.assets import SOURCE_KEY, TRAINING_KEY
from recsys_platform.deploy.dagster_instance import BATCH_QUEUE, QUEUE_KEY

OBSERVE_JOB = "classicmodels_ratings_observation"
TRAINING_JOB = "ratings_ml_training_job"
# The run queue's one slot for the batch engine (deploy/dagster_instance.py).
BATCH_ENGINE_TAG = {QUEUE_KEY: BATCH_QUEUE}

observe_job = dg.define_asset_job(
    OBSERVE_JOB, selection=[SOURCE_KEY],
    description="Observes the source: records each partition's data version (count and checksum of its ratings).")
training_job = dg.define_asset_job(
    TRAINING_JOB, selection=[TRAINING_KEY],
    description="Builds `ratings_ml_training` partitions with their checks (one engine run per run).",
    tags=BATCH_ENGINE_TAG)
