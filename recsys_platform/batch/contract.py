"""The training-data contract of `ratings_ml_training`, declared once.

Everything else derives from this module: the Arrow schema (checks, lake reads), the Spark
schema (`engines/spark.py`), the source tables' columns and the extraction query
(`source.py`), the checks (`checks.py`), the Dagster column schema (`assets/batch`) and the seed's
pandas helper. The partition rule (one folder per customer, or `customer_bucket=<k>` with
`k = customerNumber mod N`) lives here too, as data (`Layout`) and as each engine's expression.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

DATASET = "ratings_ml_training"
CUSTOMER_KEY = "customerNumber"
PRODUCT_KEY = "productCode"
RATING = "productRating"
RATING_MIN, RATING_MAX = 1, 5
BUCKET_COLUMN = "customer_bucket"

# The source tables the join reads, and the key(s) each contributes to the join.
SOURCE_KEYS: dict[str, tuple[str, ...]] = {
    "ratings": (CUSTOMER_KEY, PRODUCT_KEY),
    "customers": (CUSTOMER_KEY,),
    "products": (PRODUCT_KEY,),
}
# Tables whose rows belong to one customer (products are shared by all customers).
CUSTOMER_KEYED = tuple(t for t, keys in SOURCE_KEYS.items() if CUSTOMER_KEY in keys)

ARROW_TYPES: dict[str, pa.DataType] = {"int32": pa.int32(), "float64": pa.float64(), "string": pa.string()}


@dataclass(frozen=True)
class Column:
    """One column of the training data: its type, nullability, source table and meaning."""

    name: str
    type: str  # a key of ARROW_TYPES; every engine maps it to its own type
    nullable: bool
    source: str  # the source table the value comes from (a join key comes from every table)
    description: str

    @property
    def arrow_type(self) -> pa.DataType:
        return ARROW_TYPES[self.type]


COLUMNS: tuple[Column, ...] = (
    Column(CUSTOMER_KEY, "int32", False, "ratings",
           "customer id (the partition key: in the folder name, not in the file)"),
    Column("city", "string", True, "customers", "customer's city"),
    Column("state", "string", True, "customers", "customer's state (null outside federal countries)"),
    Column("postalCode", "string", True, "customers", "customer's postal code"),
    Column("country", "string", True, "customers", "customer's country"),
    Column("creditLimit", "float64", True, "customers", "customer's credit limit"),
    Column(PRODUCT_KEY, "string", False, "ratings", "product id, e.g. S10_1678"),
    Column("productLine", "string", True, "products", "product line, e.g. Classic Cars"),
    Column("productScale", "string", True, "products", "model scale, e.g. 1:18"),
    Column("quantityInStock", "int32", True, "products", "units in stock"),
    Column("buyPrice", "float64", True, "products", "wholesale price"),
    Column("MSRP", "float64", True, "products", "retail price"),
    Column(RATING, "int32", False, "ratings",
           f"the customer's rating of the product, {RATING_MIN} to {RATING_MAX}"),
)
BY_NAME = {c.name: c for c in COLUMNS}
COLUMN_NAMES = [c.name for c in COLUMNS]
# The columns that may never be null: the row's identity and its label.
KEY_COLUMNS = tuple(c.name for c in COLUMNS if not c.nullable)
ARROW_SCHEMA = pa.schema([pa.field(c.name, c.arrow_type, nullable=c.nullable) for c in COLUMNS])


# The source rules a build checks before it writes anything (each engine evaluates them its own
# way: Spark on the extracted frames, the Arrow engine as SQL in the source): name -> meaning.
RULES = {
    "null_keys": f"no null {', '.join(KEY_COLUMNS)} in ratings",
    "rating_range": f"every {RATING} between {RATING_MIN} and {RATING_MAX}",
    "unique_ratings": f"one rating per ({CUSTOMER_KEY}, {PRODUCT_KEY})",
    "referential_integrity": f"every rating's {PRODUCT_KEY} in products and {CUSTOMER_KEY} in customers",
    "types": "every value of a numeric column is a number (SQLite stores any value in any column)",
}


def source_columns(table: str) -> dict[str, pa.DataType]:
    """The columns the join reads from a source table (its keys first), with their Arrow types."""
    keys = SOURCE_KEYS[table]
    names = [*keys, *(c.name for c in COLUMNS if c.source == table and c.name not in keys)]
    return {n: BY_NAME[n].arrow_type for n in names}


SOURCE_COLUMNS: dict[str, dict[str, pa.DataType]] = {t: source_columns(t) for t in SOURCE_KEYS}


# -- the partition rule ---------------------------------------------------------------------------
def bucket_sql(buckets: int, column: str = CUSTOMER_KEY) -> str:
    """`column mod buckets` in SQL, never negative (the same value as Python's % and Spark's pmod),
    portable to SQLite and MySQL. `buckets` is validated as a positive integer."""
    n = _positive(buckets)
    return f"((({column} % {n}) + {n}) % {n})"


def _positive(n) -> int:
    if isinstance(n, bool) or int(n) != n or int(n) <= 0:
        raise ValueError(f"hash buckets must be a positive whole number, got {n!r}")
    return int(n)


@dataclass(frozen=True)
class Selection:
    """Which customers a build reads: every one (`customers is None` and no buckets), an
    explicit list, or the customers whose bucket (`customerNumber mod buckets`) is in `bucket_keys`.
    Built from validated integers only."""

    customers: tuple[int, ...] | None = None
    buckets: int = 0
    bucket_keys: tuple[int, ...] = ()

    @classmethod
    def of_customers(cls, customers: Sequence[int] | None) -> Selection:
        return cls(customers=None if customers is None else tuple(_whole(c) for c in customers))

    @classmethod
    def of_buckets(cls, buckets: int, keys: Sequence[int]) -> Selection:
        n = _positive(buckets)
        keys = tuple(sorted({_whole(k) for k in keys}))
        outside = [k for k in keys if not 0 <= k < n]
        if outside:
            raise ValueError(f"bucket keys must be in 0..{n - 1}, got {outside[:5]}")
        return cls(buckets=n, bucket_keys=keys)

    @property
    def everything(self) -> bool:
        return self.customers is None and not self.buckets


def _whole(v) -> int:
    """An integer from an int, an integral float or a decimal string; anything else raises."""
    if isinstance(v, bool) or (isinstance(v, float) and not v.is_integer()):
        raise ValueError(f"not a whole number: {v!r}")
    return int(v)


@dataclass(frozen=True)
class Layout:
    """How customers map to partitions: one per customer, or `customer_bucket=<k>` of `buckets`."""

    buckets: int = 0

    @property
    def column(self) -> str:
        return BUCKET_COLUMN if self.buckets else CUSTOMER_KEY

    def bucket_of(self, customer: int) -> int:
        return int(customer) % self.buckets

    def partition_of(self, customer: int) -> str:
        return str(self.bucket_of(customer) if self.buckets else int(customer))

    def selection(self, keys: Sequence[str] | None) -> Selection:
        """The customers behind a set of partition keys (all of them when `keys` is None)."""
        if keys is None:
            return Selection()
        if self.buckets:
            return Selection.of_buckets(self.buckets, [int(k) for k in keys])
        return Selection.of_customers([int(k) for k in keys])

    def partition_keys(self, customer_numbers: Sequence[int]) -> list[str]:
        if self.buckets:
            return [str(k) for k in range(self.buckets)]
        return [str(c) for c in customer_numbers]

    def prepare(self, table: pa.Table) -> pa.Table:
        """Rows of whole partitions exactly as their files hold them, whatever engine produced
        them, plus the partition column: sorted by partition, customer, then product (binary
        order), in the contract's types and nullability. Applied to many partitions at once."""
        order = dict.fromkeys([self.column, CUSTOMER_KEY, PRODUCT_KEY])
        table = table.sort_by([(c, "ascending") for c in order])
        schema = ARROW_SCHEMA
        if self.buckets:
            schema = schema.append(pa.field(BUCKET_COLUMN, pa.int32(), nullable=False))
        return _exact_floats(table.select(schema.names), schema).cast(schema)


def _exact_floats(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """DECIMAL source columns as the nearest double, like Spark's BigDecimal.doubleValue: Arrow's
    decimal-to-double cast is off by an ulp (101.27 -> 101.27000000000001); its decimal text
    parsed as a double is correctly rounded."""
    for i, field in enumerate(table.schema):
        if pa.types.is_decimal(field.type) and pa.types.is_floating(schema.field(field.name).type):
            table = table.set_column(i, field.name, pc.cast(pc.cast(table.column(i), pa.string()), pa.float64()))
    return table
