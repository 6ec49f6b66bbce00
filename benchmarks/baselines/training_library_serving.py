"""Baseline: the stream transformation Lambda as it was before the lean serving path.

The same handler, service and vector store as the platform's, but the model is the training
library's `HybridRecommender` (pandas, scipy, scikit-learn and, through the artifacts' storage,
pyarrow, all imported when the module loads, as the old handler's imports did). Measured beside
the platform's handler and the numpy + psycopg floor by `benchmarks/streaming.py --cold-starts`.
"""

from __future__ import annotations

import os

import pandas as pd
import pyarrow.fs  # noqa: F401 - the old artifacts' storage layer, imported by the old handler
import scipy.sparse  # noqa: F401
import sklearn.preprocessing  # noqa: F401

from recsys_platform.ml.hybrid import HybridRecommender
from recsys_platform.serving.handlers import StreamTransformation
from recsys_platform.serving.service import InferenceService, ModelCache
from recsys_platform.settings import Settings
from recsys_platform.storage.object_store import ObjectStore
from recsys_platform.vectors.store import VectorStore


class TrainingLibraryModel:
    """`HybridRecommender` behind the serving model's interface: rows in, vectors out, via pandas."""

    def __init__(self, model: HybridRecommender, version: str):
        self.model, self.version, self.spec, self.dim = model, version, model.spec, model.dim

    @classmethod
    def load(cls, store: ObjectStore, version: str) -> TrainingLibraryModel:
        version, model = HybridRecommender.load(store, version)
        return cls(model, version)

    def user_embeddings(self, rows):
        return self.model.user_embeddings(pd.DataFrame(rows))


_handler: StreamTransformation | None = None


def lambda_handler(event: dict, context=None) -> dict:
    global _handler
    if _handler is None:
        settings = Settings.from_env(os.environ)
        vectors = VectorStore(settings.vector_dsn)
        store = ObjectStore.from_url(settings.artifacts_url)
        service = InferenceService(ModelCache(store, vectors, load=TrainingLibraryModel.load), vectors, k=settings.top_k)
        _handler = StreamTransformation(service.recommend, k=service.k)
    return _handler(event, context)
