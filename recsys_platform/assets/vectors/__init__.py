"""Vectors domain: `item_emb` and `user_emb` in PostgreSQL + pgvector, and the model-and-vectors job."""

from __future__ import annotations

import dagster as dg

from recsys_platform.assets.vectors.assets import ITEM_KEY, USER_KEY, build_vector_assets
from recsys_platform.assets.vectors.jobs import model_and_vectors_job

__all__ = ["ITEM_KEY", "USER_KEY", "build_vector_defs"]


def build_vector_defs() -> dg.Definitions:
    return dg.Definitions(assets=[build_vector_assets()], jobs=[model_and_vectors_job])
