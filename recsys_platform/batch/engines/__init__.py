"""Batch engines: each builds `ratings_ml_training` partitions from the one contract."""
