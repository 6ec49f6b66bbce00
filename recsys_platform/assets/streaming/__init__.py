"""Streaming domain: the hourly `recommendations` asset, its job and `recommendations_sensor`."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from recsys_platform.assets.streaming.assets import RECS_KEY, build_recommendations_asset
from recsys_platform.assets.streaming.jobs import recommendations_job
from recsys_platform.assets.streaming.partitions import hourly_partitions
from recsys_platform.assets.streaming.sensors import build_recommendations_sensor

__all__ = ["RECS_KEY", "build_streaming_defs"]


def build_streaming_defs(stream_start: dt.datetime) -> dg.Definitions:
    """`stream_start`: RECSYS_STREAM_START, the first hourly partition."""
    hourly = hourly_partitions(stream_start)
    return dg.Definitions(assets=[build_recommendations_asset(hourly)], jobs=[recommendations_job],
                          sensors=[build_recommendations_sensor(hourly)])
