"""Shared storage, pure code: one object-store interface (local folder or S3) and Hive-partitioned Parquet."""
