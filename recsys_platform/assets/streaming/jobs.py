"""The streaming domain's job: one hour of `recommendations`."""

from __future__ import annotations

import dagster as dg

from recsys_platform.assets.streaming.assets import RECS_KEY

RECOMMENDATIONS_JOB = "recommendations_job"

recommendations_job = dg.define_asset_job(
    RECOMMENDATIONS_JOB, selection=[RECS_KEY],
    description="Compacts one hour of the recommendations bucket into the lake, with its checks.")
