"""A daily scheduled backfill of the training-data partitions whose source ratings changed."""

from collections.abc import Sequence

import dagster as dg

from recsys_platform.assets.batch.assets import SOURCE_VERSION, TRAINING_KEY
from recsys_platform.assets.batch.partitions import (
    latest_partition_metadata,
    partition_versions,
    partitions_for,
)
from recsys_platform.assets.shared import UNFINISHED
from recsys_platform.batch.contract import Layout
from recsys_platform.errors import RecsysError
from recsys_platform.resources import SourceDatabaseResource

STALE_SCHEDULE = "stale_training_partitions_daily"
MAX_RUNS = 4


def recorded_versions(instance: dg.DagsterInstance) -> dict[str, str]:
    """Per partition, the source version its latest build recorded (newest materialization wins)."""
    return {key: str(meta[SOURCE_VERSION].value) for key, meta in latest_partition_metadata(instance, TRAINING_KEY).items()
            if SOURCE_VERSION in meta}


def stale_keys(all_keys: Sequence[str], current: dict[str, str], recorded: dict[str, str]) -> list[str]:
    """Partitions never built, or built from a different source version (or whose customer left)."""
    return [k for k in all_keys if recorded.get(k) is None or recorded[k] != current.get(k, "absent")]


def plan_ranges(all_keys: Sequence[str], stale: set[str], max_runs: int = MAX_RUNS) -> list[tuple[str, str]]:
    """Cover the stale keys with at most `max_runs` contiguous partition ranges.

    A backfill run takes a contiguous range; rebuilding a fresh partition inside a range is
    harmless (writes are idempotent), so the smallest gaps between stale runs are merged first.
    """
    positions = [i for i, k in enumerate(all_keys) if k in stale]
    if not positions:
        return []
    spans = [[positions[0], positions[0]]]
    for p in positions[1:]:
        if p == spans[-1][1] + 1:
            spans[-1][1] = p
        else:
            spans.append([p, p])
    while len(spans) > max_runs:
        gaps = [spans[i + 1][0] - spans[i][1] for i in range(len(spans) - 1)]
        i = gaps.index(min(gaps))
        spans[i:i + 2] = [[spans[i][0], spans[i + 1][1]]]
    return [(all_keys[a], all_keys[b]) for a, b in spans]


def build_batch_schedules(layout: Layout, training_job, cron: str) -> list:
    partitions_def = partitions_for(layout)

    @dg.schedule(
        name=STALE_SCHEDULE,
        job=training_job,
        cron_schedule=cron,
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"On `{cron}` (UTC; RECSYS_STALE_CRON, daily at 03:00 by default): compares every "
        "partition's source version (count and "
        f"checksum of the customers' ratings) with the one its last build recorded, and backfills "
        f"the stale ones in at most {MAX_RUNS} single-run ranges.",
    )
    def stale_training_partitions(context: dg.ScheduleEvaluationContext,
                                  source: SourceDatabaseResource):
        try:
            current = partition_versions(layout, source.db.customer_versions())
        except RecsysError as e:
            return dg.SkipReason(f"source not readable: {e}")
        busy = context.instance.get_runs(dg.RunsFilter(job_name=training_job.name, statuses=UNFINISHED), limit=1)
        if busy:
            return dg.SkipReason(f"run {busy[0].run_id} of {training_job.name} is not finished yet: "
                                 "the next tick compares again")
        all_keys = partitions_def.get_partition_keys(dynamic_partitions_store=context.instance)
        stale = stale_keys(all_keys, current, recorded_versions(context.instance))
        if not stale:
            return dg.SkipReason(f"all {len(all_keys)} partitions are up to date")
        tick = (context.scheduled_execution_time.strftime("%Y-%m-%dT%H:%M")
                if context.scheduled_execution_time else "manual")
        return [
            dg.RunRequest(
                run_key=f"stale-{tick}-{start}-{end}",
                tags={"dagster/asset_partition_range_start": start,
                      "dagster/asset_partition_range_end": end,
                      "recsys/stale_partitions": str(len(stale))},
            )
            for start, end in plan_ranges(all_keys, set(stale))
        ]

    return [stale_training_partitions]
