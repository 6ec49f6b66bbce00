"""The platform's Dagster definitions, one package per domain: assets and their checks, and each
domain's partitions, jobs, sensors and schedules in modules of those names. `definitions.py`
merges them with the resources."""
