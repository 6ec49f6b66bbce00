"""The synthetic `classicmodels` source: its schema (SQLAlchemy Core) and a deterministic seed."""

from recsys_platform.batch.seed.synthetic import PLACES, generate, is_seeded, seed, training_table

__all__ = ["PLACES", "generate", "is_seeded", "seed", "training_table"]
