"""What the serving rules read beside the vectors: each item's attributes, each customer's purchases.

`item_attributes(id, in_stock, product_line, product_scale, price)` and
`customer_purchases(customer, product)` live in the vector database, apart from the model
versions: stock moves hourly, the model daily, so they are refreshed from the source by an asset
of their own without retraining (`assets/vectors`). Each table is loaded whole into a new table,
then swapped in under its name in one transaction: a reader sees the old rows or the new ones,
never a mix or an empty table.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import psycopg
from psycopg import sql

from recsys_platform.vectors.store import (
    ATTRIBUTES_TABLE,
    PURCHASES_TABLE,
    VectorStore,
    VectorStoreError,
    _first_line,
)


@dataclass(frozen=True)
class ItemAttributes:
    id: str                    # productCode
    in_stock: int              # quantityInStock
    product_line: str | None
    product_scale: str | None
    price: float | None        # MSRP: what a customer pays


TABLES = {
    ATTRIBUTES_TABLE: ("id varchar(64) PRIMARY KEY, in_stock integer NOT NULL, product_line text, "
                       "product_scale text, price double precision",
                       ("id", "in_stock", "product_line", "product_scale", "price")),
    PURCHASES_TABLE: ("customer integer NOT NULL, product varchar(64) NOT NULL, PRIMARY KEY (customer, product)",
                      ("customer", "product")),
}


def items_from_products(rows: Iterable[dict]) -> list[ItemAttributes]:
    """Attributes from rows of the source's `products` table (its column names)."""
    def number(value):
        return None if value is None else float(value)

    return [ItemAttributes(str(r["productCode"]), int(r["quantityInStock"] or 0), r.get("productLine"),
                           r.get("productScale"), number(r.get("MSRP"))) for r in rows]


TABLE_INDEXES = {ATTRIBUTES_TABLE: ("product_line", "price")}


def _swap_in(conn, table: str, rows: Iterable[tuple]) -> int:
    """Load `rows` into `<table>__loading`, then rename it over `table` (one transaction: the caller commits)."""
    definition, columns = TABLES[table]
    loading = f"{table}__loading"
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(loading)))
    conn.execute(sql.SQL(f"CREATE TABLE {{}} ({definition})").format(sql.Identifier(loading)))
    count = 0
    with conn.cursor().copy(sql.SQL("COPY {} ({}) FROM STDIN").format(
            sql.Identifier(loading), sql.SQL(", ").join(map(sql.Identifier, columns)))) as copy:
        for row in rows:
            copy.write_row(row)
            count += 1
    for column in TABLE_INDEXES.get(table, ()):  # what a selective rule's exact search finds its items by
        conn.execute(sql.SQL("CREATE INDEX {} ON {} ({})").format(
            sql.Identifier(f"{table}_{column}_{uuid.uuid4().hex[:8]}"), sql.Identifier(loading), sql.Identifier(column)))
    conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(loading)))
    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(table)))
    conn.execute(sql.SQL("ALTER TABLE {} RENAME TO {}").format(sql.Identifier(loading), sql.Identifier(table)))
    # The primary key's index keeps the loading name otherwise; the next load's table would clash with it.
    conn.execute(sql.SQL("ALTER INDEX {} RENAME TO {}").format(sql.Identifier(f"{loading}_pkey"),
                                                               sql.Identifier(f"{table}_pkey")))
    return count


def load_catalog(store: VectorStore, items: Sequence[ItemAttributes],
                 purchases: Iterable[tuple[int, str]]) -> dict[str, float]:
    """Replace both tables, each loaded then swapped in atomically; rows loaded and seconds. A
    load the database refuses (an outage, a duplicate id) is rolled back whole: VectorStoreError
    names the table, and the previous tables keep serving."""
    started = time.perf_counter()
    table = ATTRIBUTES_TABLE
    try:
        with store.connect() as conn:  # leaving it on an error rolls the transaction back
            attributes = _swap_in(conn, table, ((i.id, int(i.in_stock), i.product_line, i.product_scale,
                                                 None if i.price is None else float(i.price)) for i in items))
            table = PURCHASES_TABLE
            bought = _swap_in(conn, table, ((int(c), str(p)) for c, p in dict.fromkeys(purchases)))
            conn.commit()
    except psycopg.Error as e:
        raise VectorStoreError(f"loading {table} failed and was rolled back: {ATTRIBUTES_TABLE} and {PURCHASES_TABLE} "
                               f"are as they were, and serve on: {_first_line(e)}") from None
    return {"item_attributes": attributes, "customer_purchases": bought, "load_s": time.perf_counter() - started}


def read_attributes(store: VectorStore) -> dict[str, ItemAttributes]:
    """Every item's attributes as loaded (checks and tests judge answers against them)."""
    with store.connect() as conn:
        rows = conn.execute(sql.SQL("SELECT {} FROM {}").format(
            sql.SQL(", ").join(map(sql.Identifier, TABLES[ATTRIBUTES_TABLE][1])), sql.Identifier(ATTRIBUTES_TABLE))).fetchall()
    return {r[0]: ItemAttributes(*r) for r in rows}


def read_purchases(store: VectorStore) -> set[tuple[int, str]]:
    with store.connect() as conn:
        rows = conn.execute(sql.SQL("SELECT customer, product FROM {}").format(sql.Identifier(PURCHASES_TABLE))).fetchall()
    return {(int(c), str(p)) for c, p in rows}
