"""Feedback domain: the hourly `interactions` and `online_metrics`, materialized with each hour of
`recommendations` by the streaming domain's job."""

from __future__ import annotations

import datetime as dt

import dagster as dg

from recsys_platform.assets.feedback.assets import (
    INTERACTIONS_KEY,
    METRICS_KEY,
    build_interactions_asset,
    build_online_metrics_asset,
)
from recsys_platform.assets.streaming.partitions import hourly_partitions

__all__ = ["INTERACTIONS_KEY", "METRICS_KEY", "build_feedback_defs"]


def build_feedback_defs(stream_start: dt.datetime) -> dg.Definitions:
    """`stream_start`: RECSYS_STREAM_START, the first hour (the stream's hours are the feedback's)."""
    hourly = hourly_partitions(stream_start)
    return dg.Definitions(assets=[build_interactions_asset(hourly), build_online_metrics_asset(hourly)])
