"""The vectors domain's schedule: the serving rules' catalog follows the shop between two models."""

from __future__ import annotations

import dagster as dg

from recsys_platform.assets.vectors.jobs import catalog_job

CATALOG_SCHEDULE = "item_attributes_schedule"


def build_catalog_schedule(cron: str) -> dg.ScheduleDefinition:
    """`cron`: RECSYS_CATALOG_CRON (hourly by default: stock moves hourly, the model daily)."""
    return dg.ScheduleDefinition(
        name=CATALOG_SCHEDULE, job=catalog_job, cron_schedule=cron, execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"On `{cron}` (UTC; RECSYS_CATALOG_CRON): the items' stock, lines and prices and the customers' "
        "purchases from the source, so the serving rules follow the shop without retraining.")
