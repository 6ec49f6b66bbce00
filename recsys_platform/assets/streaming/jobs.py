"""The streaming domain's job: one hour of `recommendations`."""

from __future__ import annotations

import dagster as dg

from recsys_platform.assets.streaming.assets import RECS_KEY

RECOMMENDATIONS_JOB = "recommendations_job"

# The hour's feedback (group `feedback`: interactions, online metrics) is read from the same objects
# in the same run, so a rerun of the hour (new objects, a redrive) refreshes all three.
recommendations_job = dg.define_asset_job(
    RECOMMENDATIONS_JOB, selection=dg.AssetSelection.assets(RECS_KEY) | dg.AssetSelection.groups("feedback"),
    description="Compacts one hour of the recommendations bucket into the lake, then its interactions and online "
    "metrics, with their checks.")
