"""Dagster resources: each one interface whose backend (local or AWS) is chosen by configuration."""

from recsys_platform.resources.object_store import ObjectStoreResource
from recsys_platform.resources.source_db import SourceDatabaseResource
from recsys_platform.resources.spark import SparkResource
from recsys_platform.resources.vector_store import VectorStoreResource

__all__ = ["ObjectStoreResource", "SourceDatabaseResource", "SparkResource", "VectorStoreResource"]
