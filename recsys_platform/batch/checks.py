"""The contract checks of `ratings_ml_training`, evaluated on what the lake actually holds.

They read the published Parquet back with pyarrow (not the Spark job that wrote it), so a bad
writer, a tampered file or a source that moved during the run is caught.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from recsys_platform.batch.contract import (
    COLUMNS,
    CUSTOMER_KEY,
    KEY_COLUMNS,
    PRODUCT_KEY,
    RATING,
    RATING_MAX,
    RATING_MIN,
)

# name -> arrow type: the contract's columns and their types as a reader sees them.
EXPECTED_TYPES: dict[str, pa.DataType] = {c.name: c.arrow_type for c in COLUMNS}

SCHEMA = "training_schema"
RATING_RANGE = "rating_range"
NULL_KEYS = "no_null_keys"
PRODUCTS_EXIST = "products_exist"
ROW_COUNT = "row_count_matches_source"
UNIQUE = "unique_customer_product"
ALL_CHECKS = (SCHEMA, RATING_RANGE, NULL_KEYS, PRODUCTS_EXIST, ROW_COUNT, UNIQUE)
DESCRIPTIONS = {
    SCHEMA: f"Exactly the {len(COLUMNS)} contract columns with their types.",
    RATING_RANGE: f"Every {RATING} is between {RATING_MIN} and {RATING_MAX}.",
    NULL_KEYS: f"No null {', '.join(KEY_COLUMNS[:-1])} or {KEY_COLUMNS[-1]}.",
    PRODUCTS_EXIST: f"Every {PRODUCT_KEY} exists in the source products table.",
    ROW_COUNT: "Rows written equal the source's ratings for the same customers.",
    UNIQUE: f"At most one row per ({CUSTOMER_KEY}, {PRODUCT_KEY}).",
}


@dataclass
class Outcome:
    name: str
    passed: bool
    message: str
    metadata: dict = field(default_factory=dict)


def _example(table: pa.Table, mask: pa.Array) -> str:
    rows = table.filter(mask).slice(0, 1).to_pylist()
    if not rows:
        return ""
    return ", ".join(f"{k}={v!r}" for k, v in rows[0].items() if k in (*KEY_COLUMNS, "productLine"))


def evaluate(table: pa.Table, product_codes: set[str], source_rows: int) -> list[Outcome]:
    """Every check on `table` (the partitions of one run, read back from the lake)."""
    out: list[Outcome] = []
    found = {f.name: f.type for f in table.schema}
    missing = [c for c in EXPECTED_TYPES if c not in found]
    extra = [c for c in found if c not in EXPECTED_TYPES]
    wrong = [f"{c} is {found[c]}, expected {t}" for c, t in EXPECTED_TYPES.items() if c in found and found[c] != t]
    ok = not (missing or extra or wrong)
    out.append(Outcome(SCHEMA, ok, "schema matches the contract" if ok else
                       "; ".join(filter(None, [missing and f"missing columns {missing}",
                                               extra and f"unexpected columns {extra}", *wrong])),
                       {"columns": len(found)}))
    if missing:  # the other checks need the key columns; report them as failed, not crashed
        for name in ALL_CHECKS[1:]:
            out.append(Outcome(name, False, f"cannot evaluate: missing columns {missing}"))
        return out

    rating = table[RATING]
    bad_range = pc.fill_null(pc.or_(pc.less(rating, RATING_MIN), pc.greater(rating, RATING_MAX)), False)
    n_bad = pc.sum(bad_range).as_py() or 0
    out.append(Outcome(RATING_RANGE, n_bad == 0,
                       f"{n_bad} rating(s) outside {RATING_MIN}..{RATING_MAX}" + (f", e.g. {_example(table, bad_range)}" if n_bad else ""),
                       {"violations": n_bad}))

    nulls = {c: table[c].null_count for c in KEY_COLUMNS}
    n_null = sum(nulls.values())
    out.append(Outcome(NULL_KEYS, n_null == 0,
                       "no null keys" if not n_null else "null keys: " + ", ".join(f"{c}={n}" for c, n in nulls.items() if n),
                       {"violations": n_null}))

    known = pa.array(sorted(product_codes), pa.string())
    orphan = pc.invert(pc.fill_null(pc.is_in(table[PRODUCT_KEY], value_set=known), True))
    n_orphan = pc.sum(orphan).as_py() or 0
    out.append(Outcome(PRODUCTS_EXIST, n_orphan == 0,
                       f"{n_orphan} row(s) name a product missing from products" +
                       (f", e.g. {_example(table, orphan)}" if n_orphan else ""), {"violations": n_orphan}))

    out.append(Outcome(ROW_COUNT, table.num_rows == source_rows,
                       f"lake has {table.num_rows} rows, source has {source_rows}",
                       {"lake_rows": table.num_rows, "source_rows": source_rows}))

    pairs = table.group_by([CUSTOMER_KEY, PRODUCT_KEY]).aggregate([([], "count_all")])
    dupes = pairs.filter(pc.greater(pairs["count_all"], 1))
    example = dupes.slice(0, 1).to_pylist()
    out.append(Outcome(UNIQUE, dupes.num_rows == 0,
                       f"{dupes.num_rows} duplicated (customerNumber, productCode) pair(s)" +
                       (f", e.g. {example[0]}" if example else ""), {"violations": dupes.num_rows}))
    return out
