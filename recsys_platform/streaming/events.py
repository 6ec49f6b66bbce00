"""Activity events (one JSON object per stream record): parsing and validation with reasons.

Every problem is reported as a `EventError` whose message is the reason a record failed, so the
stream transformation can mark it `ProcessingFailed` and the failure output says why.

The limits are those of the systems a value travels through, checked here so that one record's
value can never fail a later step shared by the whole batch:
- JSON: no `NaN`/`Infinity` literals, no number that overflows a double, bounded nesting;
- an optional `rules` object (`vectors.rules`: exclude what the customer bought, product lines, a
  price range) is checked here too, so a bad rule fails its record with the reason;
- `event_time` (optional): an ISO 8601 time (UTC when it names no zone), when the customer acted;
  `recommendation_id` (optional): the id of the answer whose list the customer acted on;
- the source schema and the vector database: `customerNumber` is an `int` (32-bit, positive),
  `productCode` a `varchar(15)`, `city`/`country` `varchar(50)`, `creditLimit` a
  `decimal(10,2)`; PostgreSQL text holds no NUL, and UTF-8 has no lone surrogates.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import math
import re
from dataclasses import dataclass, field

from recsys_platform.vectors.rules import RuleError, parse_overrides

MAX_RECORD_BYTES = 64 * 1024  # larger records are refused (a session log, not a file upload)
MAX_BROWSE_ITEMS = 200
MAX_INT32 = 2**31 - 1          # customerNumber int(11) in MySQL, integer in PostgreSQL (user_emb.id)
MAX_CREDIT_LIMIT = 99_999_999.99  # customers.creditLimit decimal(10,2)
MAX_QUANTITY = 1_000_000
TEXT_LIMITS = {"session_id": 128, "city": 50, "country": 50, "product_code": 15, "recommendation_id": 64,
               "event_time": 40}
EARLIEST_EVENT = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)  # an event_time before this is a client's bug


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
    rules: dict = field(default_factory=dict)  # the session's changes to the serving rules (`vectors.rules`)
    event_time: dt.datetime | None = None  # when the customer acted (UTC), if the sales platform says
    acted_on: str | None = None  # the `recommendation_id` of the list the customer acted on, if any

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


_UNSAFE = re.compile("[\x00-\x1f\ud800-\udfff]")  # control characters (NUL included), lone surrogates


def _text(name: str, value: str) -> str:
    """A string PostgreSQL and UTF-8 can hold, within its column's length."""
    if not value:
        raise EventError(f"field {name} is empty")
    if len(value) > TEXT_LIMITS[name]:
        raise EventError(f"field {name} has {len(value)} characters, more than {TEXT_LIMITS[name]}")
    bad = _UNSAFE.search(value)
    if bad:
        char = bad.group()
        what = ("a NUL character" if char == "\x00" else "a lone surrogate (not valid Unicode)"
                if "\ud800" <= char <= "\udfff" else "a control character")
        raise EventError(f"field {name} contains {what}")
    return value


def _whole(name: str, value: int, low: int, high: int) -> int:
    if not low <= value <= high:
        raise EventError(f"field {name} must be between {low:,} and {high:,}, got {value}")
    return value


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


def _event_time(value: str) -> dt.datetime:
    try:
        when = dt.datetime.fromisoformat(_text("event_time", value))
    except ValueError:
        raise EventError(f"field event_time {value[:40]!r} is not an ISO 8601 time") from None
    when = when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)
    if when < EARLIEST_EVENT:
        raise EventError(f"field event_time {value!r} is before {EARLIEST_EVENT:%Y-%m-%d}")
    return when.astimezone(dt.timezone.utc)


def parse_event(obj) -> Event:
    """Validate a decoded JSON object against the event contract."""
    if not isinstance(obj, dict):
        raise EventError(f"event must be a JSON object, got {type(obj).__name__}")
    session_id = _text("session_id", _require(obj, "session_id", (str,)))
    customer = _whole("customer_number", _require(obj, "customer_number", (int,)), 1, MAX_INT32)
    city = _require(obj, "city", (str,), optional=True)
    country = _require(obj, "country", (str,), optional=True)
    city = None if city is None else _text("city", city)
    country = None if country is None else _text("country", country)
    credit = _require(obj, "credit_limit", (int, float), optional=True)
    if credit is not None and not (math.isfinite(credit) and 0 <= credit <= MAX_CREDIT_LIMIT):
        raise EventError(f"field credit_limit must be between 0 and {MAX_CREDIT_LIMIT:,}, got {credit!r}")
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
            code = _text("product_code", _require(item, "product_code", (str,)))
            quantity = _whole("quantity", _require(item, "quantity", (int,)), 0, MAX_QUANTITY)
            in_cart = _require(item, "in_shopping_cart", (bool,))
        except EventError as e:
            raise EventError(f"browse_history[{n}]: {e}") from None
        items.append(BrowseItem(code, quantity, in_cart))
    try:
        rules = parse_overrides(obj.get("rules"))
    except RuleError as e:
        raise EventError(str(e)) from None
    when = _require(obj, "event_time", (str,), optional=True)
    acted_on = _require(obj, "recommendation_id", (str,), optional=True)
    return Event(session_id, customer, city, country, None if credit is None else float(credit), items, rules,
                 None if when is None else _event_time(when),
                 None if acted_on is None else _text("recommendation_id", acted_on))


def decode_record(data_b64: str) -> tuple[dict, Event]:
    """base64 -> bytes -> JSON -> Event, each step with its own reason on failure."""
    try:
        raw = base64.b64decode(data_b64, validate=True)
    except (binascii.Error, ValueError, TypeError):
        raise EventError("data is not valid base64") from None
    if len(raw) > MAX_RECORD_BYTES:
        raise EventError(f"record is {len(raw)} bytes, more than {MAX_RECORD_BYTES}")
    try:
        obj = _DECODER.decode(raw.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise EventError("data is not valid UTF-8") from None
    except json.JSONDecodeError as e:
        raise EventError(f"data is not valid JSON: {e}") from None
    except RecursionError:
        raise EventError("data is not valid JSON: nested too deeply") from None
    except ValueError as e:  # NaN/Infinity literals, integers beyond Python's digit limit
        raise EventError(f"data is not valid JSON: {e}") from None
    return obj, parse_event(obj)


def _no_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


_DECODER = json.JSONDecoder(parse_constant=_no_constant)  # one decoder: json.loads(**kw) builds one per call
