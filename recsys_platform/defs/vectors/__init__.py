"""Vectors domain: `item_emb` and `user_emb` in PostgreSQL + pgvector."""

from recsys_platform.defs.vectors.assets import ITEM_KEY, USER_KEY, build_vector_defs

__all__ = ["ITEM_KEY", "USER_KEY", "build_vector_defs"]
