"""Registers new customers as partitions of the training data as they appear in the source."""


import dagster as dg

from recsys_platform.assets.batch.partitions import CUSTOMERS
from recsys_platform.batch.contract import Layout
from recsys_platform.errors import RecsysError
from recsys_platform.resources import SourceDatabaseResource


def new_customer_keys(source_customers: list[int], known: set[str]) -> list[str]:
    return [str(c) for c in source_customers if str(c) not in known]


def build_batch_sensors(layout: Layout) -> list:
    if layout.buckets:  # static bucket partitions never change
        return []

    @dg.sensor(
        name="customer_partitions_sensor",
        minimum_interval_seconds=300,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Adds a `customers` partition for every customer that has ratings in the source. "
        "New partitions are stale until built; the daily schedule (or a backfill) builds them.",
    )
    def customer_partitions_sensor(context: dg.SensorEvaluationContext,
                                   source: SourceDatabaseResource) -> dg.SensorResult | dg.SkipReason:
        try:
            customers = source.db.customer_numbers()
        except RecsysError as e:
            return dg.SkipReason(f"source not readable: {e}")
        known = set(context.instance.get_dynamic_partitions(CUSTOMERS.name))
        new = new_customer_keys(customers, known)
        if not new:
            return dg.SkipReason(f"all {len(known)} customers are registered")
        context.log.info(f"registering {len(new)} new customer partition(s)")
        return dg.SensorResult(dynamic_partitions_requests=[CUSTOMERS.build_add_request(new)])

    return [customer_partitions_sensor]
