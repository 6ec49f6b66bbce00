"""Model inference for a batch of sessions: embed, query pgvector once, shape the answer.

Every answer is computed against one model version and that version's own vector tables (the
version whose vectors are active), and carries that version. A record's bad values fail that
record only (`isolated`); an outage of the vector database raises, so the caller retries.

One object, built once by `build_inference_service` (from settings by `recsys_platform.wiring`,
from a Lambda's environment by `streaming.lambda_env`) and handed to whoever answers with it:
the model inference handler, the HTTP routes, the delivery runtime, the demo and the tests.
No Dagster.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from recsys_platform.errors import RecsysError
from recsys_platform.ml import artifacts
from recsys_platform.ml.artifacts import ArtifactError
from recsys_platform.ml.model import TwoTowerRecommender
from recsys_platform.storage.object_store import ObjectStore
from recsys_platform.vectors.store import Neighbour, VectorDataError, VectorStore

log = logging.getLogger(__name__)


@dataclass
class ModelCache:
    """The model of the version whose vectors are active: one version per answer.

    The vector database's active version is read at most every `check_seconds` (a warm Lambda
    does not pay a query per invocation, yet follows a switch within seconds). When it changes,
    that version's model is loaded from the artifacts bucket. If it cannot be (missing, corrupt,
    the database down), the pair already loaded keeps serving (`VectorStore.retain` keeps the
    previous version's tables), the reason is logged and kept in `last_error`, and the next try
    waits twice as long as the last, up to `max_backoff_seconds`.
    """

    store: ObjectStore
    vectors: VectorStore
    check_seconds: float = 5.0
    max_backoff_seconds: float = 60.0
    version: str | None = None
    model: TwoTowerRecommender | None = None
    last_error: str | None = None
    failures: int = 0
    _next_check: float = field(default=0.0, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def get(self) -> tuple[str, TwoTowerRecommender]:
        if self.model is not None and time.monotonic() < self._next_check:
            return self.version, self.model
        with self._lock:
            now = time.monotonic()
            if self.model is not None and now < self._next_check:
                return self.version, self.model
            try:
                active = self.vectors.active_version()
                if active is None:
                    raise ArtifactError("no model version serves yet: the vector database has no active version")
                if active != self.version:
                    version, model = artifacts.load_model(self.store, active)
                    if self.version is not None:
                        log.info("serving model %s (was %s)", version, self.version)
                    self.version, self.model = version, model
                self.failures, self.last_error = 0, None
                self._next_check = now + self.check_seconds
            except RecsysError as e:
                if self.model is None:
                    raise
                self.failures += 1
                wait = min(self.max_backoff_seconds, self.check_seconds * 2 ** self.failures)
                self._next_check = now + wait
                self.last_error = str(e)
                log.warning("model %s keeps serving: %s (next try in %.0f s)", self.version, e, wait)
            return self.version, self.model


def _neighbours(items) -> list[dict]:
    return [{"id": n.id, "score": round(n.score, 6)} for n in items]


# Errors that are one record's fault: the record fails with the reason, its neighbours go on.
# An outage (VectorStoreError: database down, timeout) is not among them: the batch retries.
RECORD_ERRORS = (VectorDataError, ValueError, TypeError, KeyError, ArithmeticError)
REQUEST_FIELDS = ("key", "customer_number", "city", "country", "credit_limit", "cart", "seen", "anchor")


def isolated(items: list, run: Callable[[list], list]) -> list:
    """`run(items)` gives one result per item; when it raises a record error, the batch is split
    in halves until the records at fault are alone: their result is the exception. A batch with
    one bad record costs about 2*log2(n) extra calls, and its good records are answered."""
    try:
        return run(items)
    except RECORD_ERRORS as e:
        if len(items) == 1:
            return [e]
        mid = len(items) // 2
        return isolated(items[:mid], run) + isolated(items[mid:], run)


def _reason(e: Exception) -> str:
    return str(e) if isinstance(e, RecsysError) else f"{type(e).__name__}: {e}"


@dataclass
class InferenceService:
    models: ModelCache
    vectors: VectorStore
    k: int = 5

    def user_vectors(self, users: list[dict]) -> tuple[str, np.ndarray]:
        """Embeddings from `city, country, creditLimit` (and the id, which a hybrid model uses)."""
        version, model = self.models.get()
        frame = pd.DataFrame(users, columns=["customerNumber", "city", "country", "creditLimit"])
        vectors = model.user_embeddings(frame)
        if not np.all(np.isfinite(vectors)):
            raise ValueError("the model cannot embed these features (the embedding is not finite)")
        return version, vectors

    def items_from_user(self, vector: list[float], limit: int) -> tuple[str, list[Neighbour]]:
        """The items whose vectors score highest against one user embedding (the lab's route)."""
        version, model = self.models.get()
        if len(vector) != model.dim:
            raise ValueError(f"one embedding of {model.dim} numbers, got {len(vector)}")
        found = self.vectors.items_for_users(np.array([vector], dtype=np.float32), k=limit, version=version)[0]
        if not all(np.isfinite(n.score) for n in found):
            raise ValueError(f"one embedding of {model.dim} numbers small enough to score (the inner product overflows)")
        return version, found

    def items_from_item(self, item_id: str, limit: int) -> tuple[str, list[Neighbour] | None]:
        """The items most similar to one item; None when the item is not in the catalog."""
        version, _ = self.models.get()
        found = self.vectors.similar_items([item_id], k=limit, version=version)[0]
        if not found and not self.vectors.known_items([item_id], version=version):
            return version, None
        return version, found

    def _embed(self, requests: list[dict]) -> list:
        """One user vector (or None: look the customer up) per request, isolated per record."""
        def run(batch: list[dict]) -> list:
            with_features = [r for r in batch if r["city"] is not None and r["country"] is not None
                             and r["credit_limit"] is not None]
            vectors = {}
            if with_features:
                _, emb = self.user_vectors([{"customerNumber": r["customer_number"], "city": r["city"],
                                             "country": r["country"], "creditLimit": float(r["credit_limit"])}
                                            for r in with_features])
                vectors = {id(r): v for r, v in zip(with_features, emb)}
            return [vectors.get(id(r)) for r in batch]

        return isolated(requests, run)

    def _query(self, requests: list[dict], k: int, version: str) -> list:
        """recommended, similar, user found, unknown codes per request, isolated per record."""
        def run(batch: list[dict]) -> list:
            found = self.vectors.recommend_batch(batch, k=k, version=version)
            return [(found["recommended"][n], found["similar"][n], found["user_found"][n],
                     sorted(r["products"] - found["known"])) for n, r in enumerate(batch)]

        return isolated(requests, run)

    def recommend(self, requests: list[dict], k: int | None = None) -> dict:
        """requests: {key, customer_number, city, country, credit_limit, cart, seen, anchor}.

        Returns {model_version, results: [{key, recommended_items, similar_items} | {key, error}]},
        one result per request in order. A request whose values fail (a malformed request, values
        the model or the database refuse) gets `error`; only an outage raises.
        """
        k = k or self.k
        version, _ = self.models.get()
        errors: dict[int, str] = {}
        for n, r in enumerate(requests):
            missing = [f for f in REQUEST_FIELDS if not isinstance(r, dict) or f not in r]
            if missing:
                errors[n] = f"malformed inference request: missing {', '.join(missing)}"
        good = [n for n in range(len(requests)) if n not in errors]
        embedded = self._embed([requests[n] for n in good]) if good else []
        batch, where = [], []
        for n, vector in zip(good, embedded):
            if isinstance(vector, Exception):
                errors[n] = _reason(vector)
                continue
            r = requests[n]
            batch.append({"user_vector": vector, "customer": r["customer_number"], "anchor": r["anchor"],
                          "exclude": set(r["seen"]), "products": set(r["seen"])})
            where.append(n)
        answers = dict(zip(where, self._query(batch, k, version))) if batch else {}
        results = []
        for n, r in enumerate(requests):
            key = r.get("key") if isinstance(r, dict) else None
            answer = answers.get(n)
            if n in errors or isinstance(answer, Exception):
                results.append({"key": key, "error": errors.get(n) or _reason(answer)})
                continue
            recommended, similar, user_found, unknown = answer
            if unknown:
                results.append({"key": key, "error": f"unknown product code(s) {unknown}"})
            elif not user_found:
                results.append({"key": key, "error": f"unknown customer {r['customer_number']} without "
                                "features (city, country, credit_limit)"})
            else:
                results.append({"key": key, "recommended_items": _neighbours(recommended),
                                "similar_items": {"product_code": r["anchor"], "similar_items": _neighbours(similar)}})
        return {"model_version": version, "results": results}


def build_inference_service(artifacts_url: str, vector_dsn: str, endpoint_url: str = "", k: int = 5) -> InferenceService:
    """The one constructor of the service: the model from the artifacts bucket, vectors from pgvector."""
    store = ObjectStore.from_url(artifacts_url, endpoint_url=endpoint_url)
    vectors = VectorStore(vector_dsn)
    return InferenceService(ModelCache(store, vectors), vectors, k=k)
