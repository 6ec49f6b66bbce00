"""Synthetic activity sessions, as the sales platform would log them, with a share of bad ones.

Known customers carry the features of the source database; new customers (numbers the source
has never seen) carry plausible features. Carts are drawn from the catalog. Malformed events
cover every failure kind the stream transformation must report.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import numpy as np
import sqlalchemy as sa

from recsys_platform.batch.seed import PLACES
from recsys_platform.streaming.stream import MAX_KEY_CHARS, MAX_RECORD_BYTES, record_size

MALFORMED_KINDS = ("invalid_json", "missing_field", "wrong_type", "empty_history", "unknown_product",
                   "unknown_customer_without_features")


def load_catalog(engine: sa.Engine) -> tuple[list[dict], list[str]]:
    with engine.connect() as conn:
        customers = [dict(r._mapping) for r in conn.execute(sa.text(
            "SELECT customerNumber, city, country, creditLimit FROM customers ORDER BY customerNumber"))]
        products = [r[0] for r in conn.execute(sa.text("SELECT productCode FROM products ORDER BY productCode"))]
    return customers, products


def sessions(customers: list[dict], products: list[str], count: int, malformed_share: float = 0.05,
             new_customer_share: float = 0.2, seed: int = 7) -> Iterator[tuple[str, bytes, str]]:
    """(partition key, record bytes, kind) for `count` sessions; kind is 'ok' or a malformed kind."""
    rng = np.random.default_rng(seed)
    for n in range(count):
        if rng.random() < new_customer_share:
            city, _, _, country = PLACES[int(rng.integers(0, len(PLACES)))]
            customer = {"customerNumber": 900_000 + n, "city": city, "country": country,
                        "creditLimit": float(np.round(rng.gamma(4.0, 20_000), -2))}
        else:
            customer = customers[int(rng.integers(0, len(customers)))]
        size = int(rng.integers(1, 6))
        picks = rng.choice(len(products), size=min(size, len(products)), replace=False)
        event = {
            "session_id": f"sess-{seed}-{n:08d}", "customer_number": int(customer["customerNumber"]),
            "city": customer["city"], "country": customer["country"],
            "credit_limit": float(customer["creditLimit"] or 0),
            "browse_history": [{"product_code": products[int(p)], "quantity": int(rng.integers(1, 4)),
                                "in_shopping_cart": bool(rng.random() < 0.5)} for p in picks],
        }
        kind = "ok"
        if rng.random() < malformed_share:
            kind = MALFORMED_KINDS[int(rng.integers(0, len(MALFORMED_KINDS)))]
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
        data = b'{"session_id": "' if kind == "invalid_json" else json.dumps(event).encode()
        yield str(event.get("customer_number", n)), data, kind


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
