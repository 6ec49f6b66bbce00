"""Dagster resources, and nothing else: each one interface whose backend (local or AWS) is chosen
by configuration, over the pure code of a domain."""

from recsys_platform.resources.glue import GlueBatchResource
from recsys_platform.resources.object_store import ObjectStoreResource
from recsys_platform.resources.source_db import SourceDatabaseResource
from recsys_platform.resources.spark import SparkResource
from recsys_platform.resources.vector_store import VectorStoreResource

__all__ = ["GlueBatchResource", "ObjectStoreResource", "SourceDatabaseResource", "SparkResource",
           "VectorStoreResource"]
