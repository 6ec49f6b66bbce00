"""Vectors domain: `item_emb` and `user_emb` in PostgreSQL + pgvector, the serving rules' catalog
(`item_attributes`, `customer_purchases`), `customer_recommendations`, their jobs, schedule and the retraining sensor."""

from __future__ import annotations

import dagster as dg

from recsys_platform.assets.vectors.assets import ITEM_KEY, USER_KEY, build_vector_assets
from recsys_platform.assets.vectors.catalog import build_catalog_assets
from recsys_platform.assets.vectors.customer_recommendations import build_customer_recommendations
from recsys_platform.assets.vectors.jobs import (
    catalog_job,
    customer_recommendations_job,
    model_and_vectors_job,
)
from recsys_platform.assets.vectors.schedules import build_catalog_schedule
from recsys_platform.assets.vectors.sensors import build_retrain_sensor

__all__ = ["ITEM_KEY", "USER_KEY", "build_vector_defs"]


def build_vector_defs(catalog_cron: str, retrain_interactions: int, retrain_min_minutes: int) -> dg.Definitions:
    """`catalog_cron`: RECSYS_CATALOG_CRON, when the serving rules' catalog is refreshed; the
    retrain sensor's RECSYS_RETRAIN_INTERACTIONS and RECSYS_RETRAIN_MIN_MINUTES."""
    return dg.Definitions(
        assets=[build_vector_assets(), build_catalog_assets(), build_customer_recommendations()],
        jobs=[model_and_vectors_job, catalog_job, customer_recommendations_job],
        schedules=[build_catalog_schedule(catalog_cron)], sensors=[build_retrain_sensor(retrain_interactions, retrain_min_minutes)])
