"""Dagster definitions, one package per domain (assets, checks, partitions, sensors, schedules)."""
