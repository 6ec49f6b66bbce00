"""Model inference for a batch of sessions: embed, query pgvector once, shape the answer.

One object, built once by `build_inference_service` (from settings by `recsys_platform.wiring`,
from a Lambda's environment by `streaming.lambda_env`) and handed to whoever answers with it:
the model inference handler, the HTTP routes, the delivery runtime, the demo and the tests.
No Dagster.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from recsys_platform.ml import artifacts
from recsys_platform.ml.model import TwoTowerRecommender
from recsys_platform.storage.object_store import ObjectStore
from recsys_platform.vectors.store import Neighbour, VectorStore


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

    def items_from_user(self, vector: list[float], limit: int) -> list[Neighbour]:
        """The items whose vectors score highest against one user embedding (the lab's route)."""
        _, model = self.models.get()
        if len(vector) != model.dim:
            raise ValueError(f"one embedding of {model.dim} numbers, got {len(vector)}")
        return self.vectors.items_for_users(np.array([vector], dtype=np.float32), k=limit)[0]

    def items_from_item(self, item_id: str, limit: int) -> list[Neighbour] | None:
        """The items most similar to one item; None when the item is not in the catalog."""
        found = self.vectors.similar_items([item_id], k=limit)[0]
        if not found and not self.vectors.known_items([item_id]):
            return None
        return found

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


def build_inference_service(artifacts_url: str, vector_dsn: str, endpoint_url: str = "", k: int = 5) -> InferenceService:
    """The one constructor of the service: the model from the artifacts bucket, vectors from pgvector."""
    store = ObjectStore.from_url(artifacts_url, endpoint_url=endpoint_url)
    return InferenceService(ModelCache(store), VectorStore(vector_dsn), k=k)
