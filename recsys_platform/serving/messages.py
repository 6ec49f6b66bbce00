"""The serving boundary's values: a recommendation request, its answer, and their JSON form.

One request per stream record (or HTTP caller), made once from a validated `Event` and carried
unchanged from the stream transformation through the inference service to the vector store; one
`Recommendation` or `Refusal` per request back. The JSON form is what crosses `lambda:Invoke`
between the two Lambdas (`{"action": "recommend", "k": 5, "requests": [...]}` and
`{"model_version": ..., "results": [...]}`), read back into the same types on the other side.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from recsys_platform.streaming.events import Event
from recsys_platform.vectors.rules import Rules
from recsys_platform.vectors.store import Neighbour

RECOMMEND_ACTION = "recommend"


@dataclass(frozen=True)
class CustomerFeatures:
    """What the user tower embeds a customer from (so a customer never seen is embedded too)."""

    city: str
    country: str
    credit_limit: float


@dataclass(frozen=True)
class RecommendationRequest:
    """One session to answer.

    `products`: every product of the session, cart or not: none is recommended or offered as
    similar, and each must be in the catalog. `anchor`: the product whose similar items are
    offered. `features` None: the customer is looked up among the known customers' vectors.
    `rules`: what may be recommended (the deployment's defaults with the session's changes).
    """

    key: str
    customer_number: int
    features: CustomerFeatures | None
    products: frozenset[str]
    anchor: str
    rules: Rules = Rules()

    @classmethod
    def from_event(cls, key: str, event: Event, rules: Rules) -> RecommendationRequest:
        """The session's request under `rules` (the deployment's defaults) with the event's changes."""
        return cls(key, event.customer_number,
                   CustomerFeatures(event.city, event.country, event.credit_limit) if event.has_features else None,
                   frozenset(b.product_code for b in event.browse_history), event.anchor_product,
                   rules.with_overrides(event.rules))

    def to_json(self) -> dict:
        f = self.features
        return {"key": self.key, "customer_number": self.customer_number,
                "features": None if f is None else {"city": f.city, "country": f.country,
                                                    "credit_limit": f.credit_limit},
                "products": sorted(self.products), "anchor": self.anchor, "rules": self.rules.to_json()}

    @classmethod
    def from_json(cls, obj) -> RecommendationRequest:
        """The request, or ValueError naming what is malformed."""
        if not isinstance(obj, dict):
            raise ValueError(f"malformed inference request: expected an object, got {type(obj).__name__}")
        missing = [f for f in ("key", "customer_number", "features", "products", "anchor") if f not in obj]
        if missing:
            raise ValueError(f"malformed inference request: missing {', '.join(missing)}")
        f = obj["features"]
        try:
            features = None if f is None else CustomerFeatures(f["city"], f["country"], float(f["credit_limit"]))
            return cls(str(obj["key"]), int(obj["customer_number"]), features,
                       frozenset(str(p) for p in obj["products"]), str(obj["anchor"]), Rules.from_json(obj.get("rules")))
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"malformed inference request: {type(e).__name__}: {e}") from None


def new_recommendation_id() -> str:
    """A unique id for one answer (a stream record, an HTTP response), beside its model version:
    what a later event names to say which list the customer acted on."""
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Recommendation:
    """The answer to one request: the recommended items, and the items similar to its anchor;
    `note` says why a list holds fewer than k items (fewer pass the rules)."""

    key: str
    recommended: list[Neighbour]
    anchor: str
    similar: list[Neighbour]
    note: str | None = None

    def record_fields(self) -> dict:
        """The fields a recommendation record adds to its event (the lab's names; `note` only when
        a list is short)."""
        fields = {"recommended_items": [n.to_json() for n in self.recommended],
                  "similar_items": {"product_code": self.anchor, "similar_items": [n.to_json() for n in self.similar]}}
        return {**fields, "note": self.note} if self.note else fields

    def to_json(self) -> dict:
        return {"key": self.key, **self.record_fields()}


@dataclass(frozen=True)
class Refusal:
    """A request that cannot be answered (its values), with the reason."""

    key: str
    reason: str

    def to_json(self) -> dict:
        return {"key": self.key, "error": self.reason}


Result = Recommendation | Refusal


@dataclass(frozen=True)
class RecommendationBatch:
    """Every request's result, in order, all from one model version."""

    model_version: str
    results: list[Result]

    def to_json(self) -> dict:
        return {"model_version": self.model_version, "results": [r.to_json() for r in self.results]}

    @classmethod
    def from_json(cls, obj: dict) -> RecommendationBatch:
        results: list[Result] = []
        for r in obj["results"]:
            if "error" in r:
                results.append(Refusal(r["key"], r["error"]))
            else:
                similar = r["similar_items"]
                results.append(Recommendation(r["key"], [Neighbour.from_json(n) for n in r["recommended_items"]],
                                              similar["product_code"],
                                              [Neighbour.from_json(n) for n in similar["similar_items"]],
                                              r.get("note")))
        return cls(obj["model_version"], results)


def recommend_payload(requests: list[RecommendationRequest], k: int) -> dict:
    """The model inference Lambda's batch event."""
    return {"action": RECOMMEND_ACTION, "k": k, "requests": [r.to_json() for r in requests]}
