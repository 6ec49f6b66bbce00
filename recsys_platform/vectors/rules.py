"""Business rules at serving time: which items may be recommended or offered as similar.

The defaults protect the retailer: nothing out of stock, nothing already in the session (the
session's products are excluded by every query, not by a rule that can be turned off). Per
request: exclude what the customer already bought, keep only some product lines or leave some
out, a price range (MSRP, the price a customer pays). `Rules.from_json` reads the same object from
the stream's events (`"rules": {...}`), RECSYS_RULES (the deployment's defaults) and the HTTP
routes' parameters, and names what is wrong. The vector store applies them inside the nearest-
neighbour query (`store.VectorStore.recommend_batch`), never by padding or trimming afterwards.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, replace

MAX_LINES = 50          # product lines named in one rule
MAX_LINE_LENGTH = 50    # productlines.productLine varchar(50)
MAX_PRICE = 1e9
LINE_PATTERN = r"^[^\x00-\x1f\x7f]+$"  # a product line's name: printable (the routes' schema says the same)
_LINE = re.compile(LINE_PATTERN)


class RuleError(ValueError):
    """A rule that cannot be applied; the message is the reason."""


@dataclass(frozen=True)
class Rules:
    in_stock_only: bool = True
    exclude_bought: bool = False
    product_lines: tuple[str, ...] = ()           # only these lines (empty: any)
    exclude_product_lines: tuple[str, ...] = ()   # never these
    min_price: float | None = None
    max_price: float | None = None

    def with_overrides(self, overrides: dict) -> Rules:
        """These rules with a request's (already validated, `parse_overrides`) changes."""
        return replace(self, **overrides)

    def to_json(self) -> dict:
        out = asdict(self)
        out["product_lines"], out["exclude_product_lines"] = list(self.product_lines), list(self.exclude_product_lines)
        return out

    @classmethod
    def from_json(cls, obj, base: Rules | None = None) -> Rules:
        """`base` (default: the protective defaults) with the changes `obj` names."""
        return (base or cls()).with_overrides(parse_overrides(obj))

    def admits(self, in_stock: int, product_line: str | None, price: float | None) -> bool:
        """Whether an item with these attributes passes (what the store's query keeps; tests and
        checks use it to judge answers)."""
        if self.in_stock_only and not in_stock > 0:
            return False
        if self.product_lines and product_line not in self.product_lines:
            return False
        if product_line in self.exclude_product_lines:
            return False
        if self.min_price is not None and (price is None or price < self.min_price):
            return False
        return not (self.max_price is not None and (price is None or price > self.max_price))


def _flag(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise RuleError(f"rules.{name} must be true or false, got {type(value).__name__}")
    return value


def _lines(name: str, value) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise RuleError(f"rules.{name} must be a list of product lines")
    if len(value) > MAX_LINES:
        raise RuleError(f"rules.{name} names {len(value)} product lines, more than {MAX_LINES}")
    for line in value:
        if not isinstance(line, str) or not line or len(line) > MAX_LINE_LENGTH or not _LINE.match(line):
            raise RuleError(f"rules.{name} must hold printable names of 1 to {MAX_LINE_LENGTH} characters, got {line!r}")
    return tuple(dict.fromkeys(value))


def _price(name: str, value) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 <= value <= MAX_PRICE:
        raise RuleError(f"rules.{name} must be a number between 0 and {MAX_PRICE:g}, got {value!r}")
    return float(value)


PARSERS = {"in_stock_only": _flag, "exclude_bought": _flag, "product_lines": _lines,
           "exclude_product_lines": _lines, "min_price": _price, "max_price": _price}


def parse_overrides(obj) -> dict:
    """The rule changes an object names (`{"exclude_bought": true, "product_lines": [...], ...}`),
    validated; RuleError names the field and what would be right."""
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise RuleError(f"rules must be an object, got {type(obj).__name__}")
    unknown = sorted(set(obj) - set(PARSERS))
    if unknown:
        raise RuleError(f"rules has unknown field(s) {unknown}; known: {sorted(PARSERS)}")
    # An empty price range (min above max) is not malformed: nothing passes, and the answer says so.
    return {name: PARSERS[name](name, value) for name, value in obj.items()}
