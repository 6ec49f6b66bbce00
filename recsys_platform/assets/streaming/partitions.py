"""The hours of the stream: `recommendations` is partitioned by hour from RECSYS_STREAM_START."""

from __future__ import annotations

import datetime as dt

import dagster as dg


def hourly_partitions(start: dt.datetime) -> dg.HourlyPartitionsDefinition:
    """Hours from `start` (a setting with a fixed default, so loading lists no bucket);
    end_offset=1: the hour in progress is a partition too, so its first objects are ingested at once."""
    return dg.HourlyPartitionsDefinition(start_date=start.strftime("%Y-%m-%d-%H:00"), end_offset=1)
