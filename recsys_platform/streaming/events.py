"""Activity events (one JSON object per stream record): parsing and validation with reasons.

Every problem is reported as a `EventError` whose message is the reason a record failed, so the
stream transformation can mark it `ProcessingFailed` and the failure output says why.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import asdict, dataclass, field

MAX_RECORD_BYTES = 64 * 1024  # larger records are refused (a session log, not a file upload)
MAX_BROWSE_ITEMS = 200


class EventError(ValueError):
    """A record that cannot become recommendations; the message is the reason."""


@dataclass(frozen=True)
class BrowseItem:
    product_code: str
    quantity: int
    in_shopping_cart: bool


@dataclass(frozen=True)
class Event:
    session_id: str
    customer_number: int
    city: str | None
    country: str | None
    credit_limit: float | None
    browse_history: list[BrowseItem] = field(default_factory=list)

    @property
    def has_features(self) -> bool:
        return self.city is not None and self.country is not None and self.credit_limit is not None

    @property
    def cart(self) -> list[str]:
        return [b.product_code for b in self.browse_history if b.in_shopping_cart]

    @property
    def seen(self) -> set[str]:
        return {b.product_code for b in self.browse_history}

    @property
    def anchor_product(self) -> str:
        """The product similar items are found for: the first in the cart, else the first browsed."""
        return (self.cart or [self.browse_history[0].product_code])[0]

    def as_dict(self) -> dict:
        return asdict(self)


def _require(obj: dict, name: str, types: tuple, optional: bool = False):
    if name not in obj or obj[name] is None:
        if optional:
            return None
        raise EventError(f"missing field {name}")
    value = obj[name]
    if isinstance(value, bool) and bool not in types:
        raise EventError(f"field {name} must be {'/'.join(t.__name__ for t in types)}, got bool")
    if not isinstance(value, types):
        raise EventError(f"field {name} must be {'/'.join(t.__name__ for t in types)}, got {type(value).__name__}")
    return value


def parse_event(obj) -> Event:
    """Validate a decoded JSON object against the event contract."""
    if not isinstance(obj, dict):
        raise EventError(f"event must be a JSON object, got {type(obj).__name__}")
    session_id = _require(obj, "session_id", (str,))
    customer = _require(obj, "customer_number", (int,))
    city = _require(obj, "city", (str,), optional=True)
    country = _require(obj, "country", (str,), optional=True)
    credit = _require(obj, "credit_limit", (int, float), optional=True)
    history = _require(obj, "browse_history", (list,))
    if not history:
        raise EventError("browse_history is empty")
    if len(history) > MAX_BROWSE_ITEMS:
        raise EventError(f"browse_history has {len(history)} items, more than {MAX_BROWSE_ITEMS}")
    items = []
    for n, item in enumerate(history):
        if not isinstance(item, dict):
            raise EventError(f"browse_history[{n}] must be an object")
        try:
            code = _require(item, "product_code", (str,))
            quantity = _require(item, "quantity", (int,))
            in_cart = _require(item, "in_shopping_cart", (bool,))
        except EventError as e:
            raise EventError(f"browse_history[{n}]: {e}") from None
        if quantity < 0:
            raise EventError(f"browse_history[{n}]: quantity must not be negative, got {quantity}")
        items.append(BrowseItem(code, quantity, in_cart))
    return Event(session_id, customer, city, country, None if credit is None else float(credit), items)


def decode_record(data_b64: str) -> tuple[dict, Event]:
    """base64 -> bytes -> JSON -> Event, each step with its own reason on failure."""
    try:
        raw = base64.b64decode(data_b64, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise EventError("data is not valid base64") from None
    if len(raw) > MAX_RECORD_BYTES:
        raise EventError(f"record is {len(raw)} bytes, more than {MAX_RECORD_BYTES}")
    try:
        obj = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise EventError(f"data is not valid JSON: {e}") from None
    return obj, parse_event(obj)
