"""Model inference for a batch of sessions: embed, query pgvector once, shape the answer.

Every answer is computed against one model version and that version's own vector tables (the
version whose vectors are active), and carries that version. A request's bad values fail that
request only (`isolated`); an outage of the vector database raises, so the caller retries.

One object, built once by `wiring.inference_service(settings)` and handed to whoever answers
with it: the model inference handler, the HTTP routes, the stream transformation in-process,
the demo and the tests. Requests and results are the typed values of `serving.messages`.
No Dagster.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from recsys_platform.errors import RecsysError
from recsys_platform.ml.artifacts import ArtifactError
from recsys_platform.ml.published import PublishedModel
from recsys_platform.serving.messages import (
    CustomerFeatures,
    Recommendation,
    RecommendationBatch,
    RecommendationRequest,
    Refusal,
    Result,
)
from recsys_platform.storage.object_store import ObjectStore
from recsys_platform.vectors.rules import Rules
from recsys_platform.vectors.store import (
    Neighbour,
    SessionNeighbours,
    SessionQuery,
    VectorDataError,
    VectorStore,
)

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
    load: Callable[[ObjectStore, str], PublishedModel] = PublishedModel.load  # a version's model from the bucket
    check_seconds: float = 5.0
    max_backoff_seconds: float = 60.0
    version: str | None = None
    model: PublishedModel | None = None
    last_error: str | None = None
    failures: int = 0
    _next_check: float = field(default=0.0, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def get(self) -> tuple[str, PublishedModel]:
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
                    model = self.load(self.store, active)
                    version = model.version
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


# Errors that are one request's fault: it fails with the reason, its neighbours go on. An
# outage (VectorStoreError: database down, timeout) is not among them: the batch retries.
RECORD_ERRORS = (VectorDataError, ValueError, TypeError, KeyError, ArithmeticError)
# The training contract's customer feature columns, as the user tower reads them.
USER_FEATURE_COLUMNS = ("city", "country", "creditLimit")


def isolated(items: list, run: Callable[[list], list]) -> list:
    """`run(items)` gives one result per item; when it raises a record error, the batch is split
    in halves until the items at fault are alone: their result is the exception. A batch with
    one bad item costs about 2*log2(n) extra calls, and its good items are answered."""
    try:
        return run(items)
    except RECORD_ERRORS as e:
        if len(items) == 1:
            return [e]
        mid = len(items) // 2
        return isolated(items[:mid], run) + isolated(items[mid:], run)


def _reason(e: Exception) -> str:
    return str(e) if isinstance(e, RecsysError) else f"{type(e).__name__}: {e}"


@dataclass(frozen=True)
class Answer:
    """One route's items (None: the item asked about is unknown), their model version, and why
    there are fewer than asked, if there are."""

    version: str
    items: list[Neighbour] | None
    note: str | None = None


@dataclass
class InferenceService:
    models: ModelCache
    vectors: VectorStore
    k: int = 5
    rules: Rules = Rules()  # the deployment's default rules (RECSYS_RULES), what a request changes

    def embed_customers(self, customers: Sequence[tuple[int | None, CustomerFeatures]]) -> tuple[str, np.ndarray]:
        """One embedding per (customer number or None, features), from the features (and the
        number, which the hybrid's collaborative part uses for a known customer)."""
        version, model = self.models.get()
        city, country, credit_limit = USER_FEATURE_COLUMNS
        vectors = model.user_embeddings([{model.spec.user_id: number, city: f.city, country: f.country,
                                          credit_limit: float(f.credit_limit)} for number, f in customers])
        if not np.all(np.isfinite(vectors)):
            raise ValueError("the model cannot embed these features (the embedding is not finite)")
        return version, vectors

    def items_from_user(self, vector: list[float], limit: int, rules: Rules | None = None,
                        customer: int | None = None) -> Answer:
        """The items whose vectors score highest against one user embedding (the lab's route),
        under `rules` (default: the service's); `customer` names whose purchases `exclude_bought`
        leaves out."""
        version, model = self.models.get()
        if len(vector) != model.dim:
            raise ValueError(f"one embedding of {model.dim} numbers, got {len(vector)}")
        query = SessionQuery(np.array(vector, dtype=np.float32), customer, None, frozenset(), rules or self.rules)
        (found,) = self.vectors.recommend_batch([query], k=limit, version=version)
        if not all(np.isfinite(n.score) for n in found.recommended):
            raise ValueError(f"one embedding of {model.dim} numbers small enough to score (the inner product overflows)")
        return Answer(version, found.recommended, found.note(limit))

    def items_from_item(self, item_id: str, limit: int, rules: Rules | None = None,
                        customer: int | None = None) -> Answer:
        """The items most similar to one item under `rules`; `items` None when the item is not in
        the catalog."""
        version, _ = self.models.get()
        query = SessionQuery(None, customer, item_id, frozenset([item_id]), rules or self.rules, recommend=False)
        (found,) = self.vectors.recommend_batch([query], k=limit, version=version)
        if found.unknown_products:
            return Answer(version, None)
        return Answer(version, found.similar, found.note(limit))

    def _queries(self, requests: list[RecommendationRequest]) -> list[SessionQuery | Exception]:
        """One store query per request (the user vector from its features, or None: look the
        customer up), isolated per request."""
        def run(batch: list[RecommendationRequest]) -> list[SessionQuery]:
            with_features = [r for r in batch if r.features is not None]
            vectors = {}
            if with_features:
                _, emb = self.embed_customers([(r.customer_number, r.features) for r in with_features])
                vectors = {id(r): v for r, v in zip(with_features, emb)}
            return [SessionQuery(vectors.get(id(r)), r.customer_number, r.anchor, r.products, r.rules) for r in batch]

        return isolated(requests, run)

    def _neighbours(self, queries: list[SessionQuery], k: int, version: str) -> list[SessionNeighbours | Exception]:
        return isolated(queries, lambda batch: self.vectors.recommend_batch(batch, k=k, version=version))

    def recommend(self, requests: Sequence[RecommendationRequest], k: int | None = None) -> RecommendationBatch:
        """One result per request, in order, all from one model version. A request whose values
        fail (values the model or the database refuse) is refused with the reason; only an
        outage raises."""
        k = k or self.k
        version, _ = self.models.get()
        results: dict[int, Result] = {}
        queries = {}
        for n, q in enumerate(self._queries(list(requests)) if requests else []):
            if isinstance(q, Exception):
                results[n] = Refusal(requests[n].key, _reason(q))
            else:
                queries[n] = q
        found = dict(zip(queries, self._neighbours(list(queries.values()), k, version))) if queries else {}
        for n, answer in found.items():
            r = requests[n]
            if isinstance(answer, Exception):
                results[n] = Refusal(r.key, _reason(answer))
            elif answer.unknown_products:
                results[n] = Refusal(r.key, f"unknown product code(s) {answer.unknown_products}")
            elif not answer.user_found:
                results[n] = Refusal(r.key, f"unknown customer {r.customer_number} without features "
                                     "(city, country, credit_limit)")
            else:
                results[n] = Recommendation(r.key, answer.recommended, r.anchor, answer.similar, answer.note(k))
        return RecommendationBatch(version, [results[n] for n in range(len(requests))])


def build_inference_service(artifacts_url: str, vectors: VectorStore, endpoint_url: str = "", region: str = "",
                            k: int = 5, rules: Rules = Rules()) -> InferenceService:
    """The one constructor of the service: the model from the artifacts bucket, vectors from pgvector."""
    store = ObjectStore.from_url(artifacts_url, endpoint_url=endpoint_url, region=region)
    return InferenceService(ModelCache(store, vectors), vectors, k=k, rules=rules)
