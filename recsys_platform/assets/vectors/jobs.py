"""The vectors domain's job: a new model and the vectors it serves, as one run."""

from __future__ import annotations

import dagster as dg

from recsys_platform.assets.ml.assets import MODEL_KEY
from recsys_platform.assets.vectors.assets import ITEM_KEY, USER_KEY

MODEL_AND_VECTORS_JOB = "model_and_vectors_job"

model_and_vectors_job = dg.define_asset_job(
    MODEL_AND_VECTORS_JOB, selection=[MODEL_KEY, ITEM_KEY, USER_KEY],
    description="Trains, evaluates and publishes the model, then loads and switches the vectors.")
