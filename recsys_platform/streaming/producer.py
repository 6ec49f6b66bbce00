"""Synthetic activity sessions, as the sales platform would log them, with a share of bad ones.

Known customers carry the features of the source database; new customers (numbers the source
has never seen) carry plausible features. `sessions`: one event per session, carts drawn uniformly
from the catalog. `learnable_sessions`: several events per session, with event times, whose
carts follow the customers' latent tastes (the collaborative seed mode's), optionally shifting
part way: what the feedback loop learns from and its online metrics measure. Malformed events
cover every failure kind the stream transformation must report.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
import sqlalchemy as sa

from recsys_platform.batch.seed import PLACES, generate
from recsys_platform.batch.seed.synthetic import LatentTastes, latent_tastes
from recsys_platform.streaming.stream import MAX_KEY_CHARS, MAX_RECORD_BYTES, record_size

MALFORMED_KINDS = ("invalid_json", "missing_field", "wrong_type", "empty_history", "unknown_product",
                   "unknown_customer_without_features")


def load_catalog(engine: sa.Engine) -> tuple[list[dict], list[str]]:
    with engine.connect() as conn:
        customers = [dict(r._mapping) for r in conn.execute(sa.text(
            "SELECT customerNumber, city, country, creditLimit FROM customers ORDER BY customerNumber"))]
        products = [r[0] for r in conn.execute(sa.text("SELECT productCode FROM products ORDER BY productCode"))]
    return customers, products


def _malformed(event: dict, kind: str, n: int) -> dict:
    """`event` broken the way `kind` names (one of MALFORMED_KINDS but invalid_json, made from the bytes)."""
    event = {**event, "browse_history": [dict(b) for b in event["browse_history"]]}
    if kind == "missing_field":
        del event["session_id"]
    elif kind == "wrong_type":
        event["customer_number"] = str(event["customer_number"])
    elif kind == "empty_history":
        event["browse_history"] = []
    elif kind == "unknown_product":
        event["browse_history"][0]["product_code"] = "S00_0000"
    elif kind == "unknown_customer_without_features":
        event = {k: v for k, v in event.items() if k not in ("city", "country", "credit_limit")}
        event["customer_number"] = 800_000 + n
    return event


def _record(event: dict, kind: str, n: int) -> tuple[str, bytes, str]:
    if kind != "ok":
        event = _malformed(event, kind, n)
    data = b'{"session_id": "' if kind == "invalid_json" else json.dumps(event).encode()
    return str(event.get("customer_number", n)), data, kind


def _kind(rng: np.random.Generator, malformed_share: float) -> str:
    return MALFORMED_KINDS[int(rng.integers(0, len(MALFORMED_KINDS)))] if rng.random() < malformed_share else "ok"


def _new_customer(rng: np.random.Generator, number: int) -> dict:
    city, _, _, country = PLACES[int(rng.integers(0, len(PLACES)))]
    return {"customerNumber": number, "city": city, "country": country,
            "creditLimit": float(np.round(rng.gamma(4.0, 20_000), -2))}


def _features(customer: dict) -> dict:
    return {"customer_number": int(customer["customerNumber"]), "city": customer["city"],
            "country": customer["country"], "credit_limit": float(customer["creditLimit"] or 0)}


def sessions(customers: list[dict], products: list[str], count: int, malformed_share: float = 0.05,
             new_customer_share: float = 0.2, seed: int = 7) -> Iterator[tuple[str, bytes, str]]:
    """(partition key, record bytes, kind) for `count` one-event sessions with carts drawn uniformly
    from the catalog; kind is 'ok' or a malformed kind."""
    rng = np.random.default_rng(seed)
    for n in range(count):
        if rng.random() < new_customer_share:
            customer = _new_customer(rng, 900_000 + n)
        else:
            customer = customers[int(rng.integers(0, len(customers)))]
        size = int(rng.integers(1, 6))
        picks = rng.choice(len(products), size=min(size, len(products)), replace=False)
        event = {"session_id": f"sess-{seed}-{n:08d}", **_features(customer),
                 "browse_history": [{"product_code": products[int(p)], "quantity": int(rng.integers(1, 4)),
                                     "in_shopping_cart": bool(rng.random() < 0.5)} for p in picks]}
        yield _record(event, _kind(rng, malformed_share), n)


@dataclass(frozen=True)
class SessionTastes:
    """What customers like, for learnable sessions: the collaborative seed mode's latent tastes
    (`batch.seed.latent_tastes`) keyed by customer number and product code."""

    tastes: LatentTastes
    customer_index: dict[int, int]
    products: list[str]  # in the tastes' item order

    @classmethod
    def of_seed(cls, scale: float, seed: int, customers: list[dict], products: list[str]) -> SessionTastes:
        """The tastes of a source seeded by `recsys-platform seed --scale scale --seed seed`; ValueError
        when the source's catalog is not that seed's (learnable sessions need the seed's tastes)."""
        tastes, numbers, codes = latent_tastes(generate(scale, seed=seed), seed)
        if set(codes) != set(products) or not {int(c["customerNumber"]) for c in customers} <= set(numbers):
            raise ValueError(f"the source's customers and products are not those of `seed --scale {scale:g} --seed "
                             f"{seed}`: learnable sessions follow that seed's tastes")
        return cls(tastes, {n: i for i, n in enumerate(numbers)}, codes)

    def user(self, customer: dict, rng: np.random.Generator, known: dict[int, np.ndarray]) -> np.ndarray:
        number = int(customer["customerNumber"])
        if number in self.customer_index:
            return self.tastes.users[self.customer_index[number]]
        if number not in known:  # a customer the source does not hold: drawn once, kept for the session
            known[number] = self.tastes.new_user(customer["country"], float(customer["creditLimit"] or 0), rng)
        return known[number]

    def shifted(self, strength: float, seed: int) -> SessionTastes:
        return replace(self, tastes=self.tastes.shifted(strength, seed))


def learnable_sessions(customers: list[dict], tastes: SessionTastes, count: int, start: dt.datetime,
                       events: tuple[int, int] = (2, 5), malformed_share: float = 0.0, new_customer_share: float = 0.2,
                       shift: float = 0.0, shift_at: float = 0.5, seconds_apart: float = 30.0,
                       seed: int = 7) -> Iterator[tuple[str, bytes, str]]:
    """(partition key, record bytes, kind) for `count` sessions of `events` (low, high) events each:
    every event browses one to three products drawn from the customer's tastes and carts each
    with even odds, at `event_time`s `seconds_apart` apart from `start` (sessions start a minute
    apart). With `shift` > 0, the sessions from `shift_at` (a share of `count`) on follow tastes
    that moved by that strength (`LatentTastes.shifted`): what retraining must catch up with."""
    rng = np.random.default_rng(seed)
    moved = tastes.shifted(shift, seed + 1) if shift else tastes
    new_users: dict[int, np.ndarray] = {}
    for n in range(count):
        now = moved if shift and n >= shift_at * count else tastes
        if rng.random() < new_customer_share:
            customer = _new_customer(rng, 900_000 + n % max(1, count // 4))  # new customers come back too
        else:
            customer = customers[int(rng.integers(0, len(customers)))]
        appeal = now.tastes.appeal(now.user(customer, rng, new_users))
        when = start + dt.timedelta(minutes=n)
        for e in range(int(rng.integers(events[0], events[1] + 1))):
            picks = rng.choice(len(now.products), size=int(rng.integers(1, 4)), replace=False, p=appeal)
            event = {"session_id": f"sess-{seed}-{n:08d}", **_features(customer),
                     "event_time": (when + dt.timedelta(seconds=e * seconds_apart)).isoformat(),
                     "browse_history": [{"product_code": now.products[int(p)], "quantity": int(rng.integers(1, 4)),
                                         "in_shopping_cart": bool(rng.random() < 0.5)} for p in picks]}
            yield _record(event, _kind(rng, malformed_share), n)


def recorded(path: str) -> list[tuple[str, bytes, str]]:
    """(partition key, record bytes, "recorded") for every non-empty line of a JSON-lines log, as it
    is (a malformed line too: the transformation judges it, as it would the live one). The key is
    the event's customer number when it has one (as the producer's), else `line-<n>`. Read whole
    before anything is sent: a line Kinesis would refuse stops the replay naming it, with nothing sent."""
    out, too_big = [], []
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            data = line.rstrip(b"\r\n")
            if not data.strip():
                continue
            try:
                event = json.loads(data)
                key = str(event["customer_number"]) if isinstance(event, dict) and "customer_number" in event else ""
            except ValueError:
                key = ""
            key = key[:MAX_KEY_CHARS] or f"line-{n}"
            if record_size(key, data) > MAX_RECORD_BYTES:
                too_big.append(f"line {n} ({len(data):,} bytes)")
            out.append((key, data, "recorded"))
    if too_big:
        raise ValueError(f"{len(too_big)} line(s) over Kinesis's {MAX_RECORD_BYTES:,}-byte record limit, nothing "
                         f"sent: {', '.join(too_big[:5])}")
    return out
