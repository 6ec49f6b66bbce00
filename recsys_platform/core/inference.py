"""Model inference for a batch of sessions: embed, query pgvector once, shape the answer.

Shared by the `model_inference` Lambda, `recsys-platform serve` and the tests; no Dagster.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from recsys_platform.core import artifacts
from recsys_platform.core.model import TwoTowerRecommender
from recsys_platform.core.object_store import ObjectStore
from recsys_platform.core.vector_store import VectorStore


@dataclass
class ModelCache:
    """The CURRENT model, loaded once and reloaded when `CURRENT` changes.

    `CURRENT` is re-read at most every `check_seconds`, so a warm Lambda does not pay an object
    GET per invocation yet picks up a new version within seconds.
    """

    store: ObjectStore
    check_seconds: float = 5.0
    version: str | None = None
    model: TwoTowerRecommender | None = None
    _checked_at: float = field(default=0.0, repr=False)

    def get(self) -> tuple[str, TwoTowerRecommender]:
        now = time.monotonic()
        if self.model is None or now - self._checked_at >= self.check_seconds:
            current = artifacts.current_version(self.store)
            if current != self.version:
                self.version, self.model = artifacts.load_model(self.store, current)
            self._checked_at = now
        return self.version, self.model


def _neighbours(items) -> list[dict]:
    return [{"id": n.id, "score": round(n.score, 6)} for n in items]


@dataclass
class InferenceService:
    models: ModelCache
    vectors: VectorStore
    k: int = 5

    def user_vectors(self, users: list[dict]) -> tuple[str, np.ndarray]:
        """Embeddings from `city, country, creditLimit` (and the id, which a hybrid model uses)."""
        version, model = self.models.get()
        frame = pd.DataFrame(users, columns=["customerNumber", "city", "country", "creditLimit"])
        return version, model.user_embeddings(frame)

    def recommend(self, requests: list[dict], k: int | None = None) -> dict:
        """requests: {key, customer_number, city, country, credit_limit, cart, seen, anchor}.

        Returns {model_version, results: [{key, recommended_items, similar_items} | {key, error}]}.
        """
        k = k or self.k
        version, model = self.models.get()
        with_features = [r for r in requests if r.get("city") is not None and r.get("country") is not None
                         and r.get("credit_limit") is not None]
        vectors = {}
        if with_features:
            _, emb = self.user_vectors([{"customerNumber": r["customer_number"], "city": r["city"],
                                         "country": r["country"], "creditLimit": r["credit_limit"]}
                                        for r in with_features])
            vectors = {id(r): v for r, v in zip(with_features, emb)}
        batch = [{"user_vector": vectors.get(id(r)), "customer": r["customer_number"], "anchor": r["anchor"],
                  "exclude": set(r["seen"]), "products": set(r["seen"])} for r in requests]
        found = self.vectors.recommend_batch(batch, k=k) if batch else {"known": set()}
        results = []
        for n, r in enumerate(requests):
            unknown = sorted(set(r["seen"]) - found["known"])
            if unknown:
                results.append({"key": r["key"], "error": f"unknown product code(s) {unknown}"})
            elif not found["user_found"][n]:
                results.append({"key": r["key"], "error": f"unknown customer {r['customer_number']} without "
                                "features (city, country, credit_limit)"})
            else:
                results.append({"key": r["key"], "recommended_items": _neighbours(found["recommended"][n]),
                                "similar_items": {"product_code": r["anchor"],
                                                  "similar_items": _neighbours(found["similar"][n])}})
        return {"model_version": version, "results": results}
