"""The Arrow engine: `ratings_ml_training` on one machine, without a JVM.

1. Validate: the contract's source rules (`contract.RULES`) as aggregate SQL in the source, so a
   bad source is refused before anything is written, without holding the table in memory.
2. Stream the lab's join (`ratings r join products p using productCode join customers c using
   customerNumber`) through connectorx (a Rust reader for MySQL/MariaDB, PostgreSQL and SQLite)
   as Arrow record batches, ordered by partition, in bounded batches.
3. Write each partition as soon as its rows are complete, on a small thread pool, through the
   same `PartitionWriter` and `Layout.prepare` as the Spark engine: the same rows give the same
   bytes, whichever engine wrote them.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from recsys_platform.batch.build import BuildResult, Violation, reconcile, refuse
from recsys_platform.batch.contract import (
    BUCKET_COLUMN,
    BY_NAME,
    COLUMNS,
    CUSTOMER_KEY,
    DATASET,
    KEY_COLUMNS,
    PRODUCT_KEY,
    RATING,
    RATING_MAX,
    RATING_MIN,
    SOURCE_COLUMNS,
    Layout,
    Selection,
    bucket_sql,
)
from recsys_platform.batch.source import SourceDatabase, customer_filter
from recsys_platform.errors import ConfigError, SourceUnavailableError
from recsys_platform.storage import lake
from recsys_platform.storage.object_store import ObjectStore

EXTRACTION = "connectorx-arrow"
ALIASES = {"ratings": "r", "customers": "c", "products": "p"}
# SQLite keeps any value in any column: numeric columns are cast in SQL (connectorx refuses a
# column whose rows mix storage classes) after the `types` rule has checked they hold numbers.
SQLITE_CASTS = {"int32": "INTEGER", "float64": "REAL"}
SQLITE_TYPEOF = {"int32": ("integer",), "float64": ("integer", "real")}


def connectorx_url(url: str) -> str:
    """A SQLAlchemy URL as connectorx takes it (mysql://, postgresql://, sqlite:///abs/path)."""
    u = make_url(url)
    backend = u.get_backend_name()
    if backend == "sqlite":
        if not u.database or u.database == ":memory:":
            raise ConfigError("the Arrow engine needs a SQLite file, not an in-memory database")
        return f"sqlite://{os.path.abspath(u.database)}"
    scheme = {"mysql": "mysql", "mariadb": "mysql", "postgresql": "postgresql"}.get(backend)
    if scheme is None:
        raise ConfigError(f"the Arrow engine reads MySQL/MariaDB, PostgreSQL or SQLite, not {backend}; "
                          "set RECSYS_ENGINE=spark")
    auth = quote(u.username or "", safe="") + (f":{quote(u.password, safe='')}" if u.password else "")
    port = f":{u.port}" if u.port else ""
    return f"{scheme}://{auth}@{u.host or 'localhost'}{port}/{u.database or ''}"


def _column_sql(name: str, dialect: str) -> str:
    """`alias.column AS column`, cast where SQLite's storage classes would mix."""
    column = BY_NAME[name]
    table = "ratings" if name in (CUSTOMER_KEY, PRODUCT_KEY) else column.source
    ref = f"{ALIASES[table]}.{name}"
    if dialect == "sqlite" and column.type in SQLITE_CASTS:
        ref = f"CAST({ref} AS {SQLITE_CASTS[column.type]})"
    return f"{ref} AS {name}"


def join_sql(selection: Selection, layout: Layout, dialect: str) -> str:
    """The lab's join for a selection of customers; per customer, ordered so each partition's
    rows are adjacent (with buckets the engine groups rows itself: no sort in the source)."""
    columns = [_column_sql(c.name, dialect) for c in COLUMNS]
    order = f" ORDER BY r.{CUSTOMER_KEY}"
    if layout.buckets:
        columns.append(f"{bucket_sql(layout.buckets, f'r.{CUSTOMER_KEY}')} AS {BUCKET_COLUMN}")
        order = ""
    where, _ = customer_filter(selection, inline=True, column=f"r.{CUSTOMER_KEY}")
    return (f"SELECT {', '.join(columns)} FROM ratings r "
            f"JOIN products p ON p.{PRODUCT_KEY} = r.{PRODUCT_KEY} "
            f"JOIN customers c ON c.{CUSTOMER_KEY} = r.{CUSTOMER_KEY}{where}{order}")


# -- validation: the contract's source rules, evaluated by the source database ------------------------
def _one_example(conn: sa.Connection, sql: str, params: dict) -> str:
    row = conn.execute(sa.text(sql + " LIMIT 1"), params).mappings().first()
    return ", ".join(f"{k}={v!r}" for k, v in row.items()) if row else ""


def find_violations(source: SourceDatabase, selection: Selection) -> list[Violation]:
    """The same rules as the Spark engine's `find_violations`, as SQL over the selected ratings
    (skipping, as it does, those the source guarantees: `SourceDatabase.enforced_rules`).

    The rules are counted over the whole table first, in three scans (row rules, duplicates,
    orphans); a long `IN` list makes MariaDB's grouping and anti-joins 10-30x slower, and a clean
    table means a clean selection. Only a rule that finds something is counted again within the
    selection, which is what decides.
    """
    where, params = customer_filter(selection)
    r_where, r_params = customer_filter(selection, column=f"r.{CUSTOMER_KEY}")
    columns = ", ".join(SOURCE_COLUMNS["ratings"])
    rules = {("null_keys", c): f"{c} IS NULL" for c in KEY_COLUMNS}
    rules[("rating_range", RATING)] = f"({RATING} < {RATING_MIN} OR {RATING} > {RATING_MAX})"
    dupes = (f"SELECT {CUSTOMER_KEY}, {PRODUCT_KEY}, COUNT(*) AS n FROM ratings{{where}} "
             f"GROUP BY {CUSTOMER_KEY}, {PRODUCT_KEY} HAVING COUNT(*) > 1")
    orphan_rules = {key: f"{alias}.{key} IS NULL AND r.{key} IS NOT NULL"
                    for key, alias in ((PRODUCT_KEY, "p"), (CUSTOMER_KEY, "c"))}
    joins = (f"FROM ratings r LEFT JOIN products p ON p.{PRODUCT_KEY} = r.{PRODUCT_KEY} "
             f"LEFT JOIN customers c ON c.{CUSTOMER_KEY} = r.{CUSTOMER_KEY}")
    out: list[Violation] = []
    enforced = source.enforced_rules()
    with source.connect() as conn:
        if source.dialect == "sqlite":
            out += _sqlite_type_violations(conn)

        def narrowed(check: str, column: str, sql: str, sql_params: dict) -> None:
            n = int(conn.execute(sa.text(f"SELECT COUNT(*) FROM ({sql}) x"), sql_params).scalar_one())
            if n:
                out.append(Violation(check, "ratings", column, n, _one_example(conn, sql, sql_params)))

        def sums(conds: list[str], from_: str) -> list[int]:
            row = conn.execute(sa.text("SELECT " + ", ".join(
                f"SUM(CASE WHEN {c} THEN 1 ELSE 0 END)" for c in conds) + f" {from_}")).one()
            return [int(v or 0) for v in row]

        for ((check, column), cond), n in zip(rules.items(), sums(list(rules.values()), "FROM ratings")):
            if n:
                narrowed(check, column, f"SELECT {columns} FROM ratings{where}{' AND ' if where else ' WHERE '}{cond}", params)
        if "unique_ratings" not in enforced and \
                conn.execute(sa.text(f"SELECT COUNT(*) FROM ({dupes.format(where='')}) d")).scalar_one():
            narrowed("unique_ratings", f"{CUSTOMER_KEY}, {PRODUCT_KEY}", dupes.format(where=where), params)
        for (key, cond), n in zip(orphan_rules.items(), sums(list(orphan_rules.values()), joins)):
            if n:
                narrowed("referential_integrity", key, f"SELECT r.{CUSTOMER_KEY}, r.{PRODUCT_KEY}, r.{RATING} {joins}"
                         f"{r_where}{' AND ' if r_where else ' WHERE '}{cond}", r_params)
    return out


def _sqlite_type_violations(conn: sa.Connection) -> list[Violation]:
    out = []
    for table, columns in SOURCE_COLUMNS.items():
        for name in columns:
            kind = BY_NAME[name].type
            if kind not in SQLITE_TYPEOF:
                continue
            allowed = ", ".join(f"'{t}'" for t in (*SQLITE_TYPEOF[kind], "null"))
            bad = f"SELECT {name} FROM {table} WHERE typeof({name}) NOT IN ({allowed})"
            n = conn.execute(sa.text(f"SELECT COUNT(*) FROM ({bad}) b")).scalar_one()
            if n:
                out.append(Violation("types", table, name, int(n), _one_example(conn, bad, {})))
    return out


# -- the build --------------------------------------------------------------------------------------
def read_join(source: SourceDatabase, selection: Selection, layout: Layout,
              batch_rows: int = 65_536) -> Iterator[pa.RecordBatch]:
    """The join as a stream of Arrow record batches (connectorx), in `join_sql`'s order."""
    import connectorx as cx

    sql = join_sql(selection, layout, source.dialect)
    try:
        reader = cx.read_sql(connectorx_url(source.url), sql, return_type="arrow_stream", batch_size=batch_rows)
    except RuntimeError as e:
        raise SourceUnavailableError(f"cannot read the source {source.masked_url}: "
                                     f"{str(e).replace(make_url(source.url).password or chr(0), '***')}") from None
    yield from reader


def build(source: SourceDatabase, store: ObjectStore, keys: Sequence[str], layout: Layout = Layout(),
          log=print, batch_rows: int = 65_536, threads: int | None = None) -> BuildResult:
    """Replace the partitions `keys` of `<store>/ratings_ml_training/` with fresh data.

    Validates the source first: on any violation raises DataQualityError and writes nothing.
    `threads` writing partitions: by default 4 for hash buckets (large files: encoding releases
    the GIL) and 2 per customer (tiny files: one thread's folder and file creation overlaps the
    other's encoding; 12,200 customers from MariaDB in 8.5-10.2 s against 12.3-13.0 s with one
    thread, and no faster with more, as the kernel serializes entries in one folder).
    """
    if threads is None:
        threads = 4 if layout.buckets else 2
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    source.validate_schema()
    selection = layout.selection(keys)
    writer = lake.PartitionWriter(store.url, store.endpoint_url, DATASET, layout.column, prepare=layout.prepare)
    # The rules run on their own connection while the source computes the join: the writer
    # waits for their verdict before its first write, so a bad source writes nothing.
    with ThreadPoolExecutor(max_workers=1) as pool:
        verdict = pool.submit(find_violations, source, selection)

        def check() -> None:
            refuse(verdict.result())
            timings.setdefault("checked_after_s", time.perf_counter() - t0)

        stream = read_join(source, selection, layout, batch_rows)
        if layout.buckets:  # few, large partitions: grouped here (spilled to local files), not sorted by the source
            with tempfile.TemporaryDirectory(prefix="recsys-spill-") as folder:
                spilled = lake.spill_by_partition(stream, layout.column, folder)
                check()
                items = ((key, layout.prepare(lake.read_spilled(path)))
                         for key, path in sorted(spilled.items(), key=lambda kv: int(kv[0])))
                counts = dict(writer.write_partitions(items, threads=threads))
        else:
            def checked(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
                for n, batch in enumerate(batches):
                    if n == 0:
                        check()
                    yield batch
                check()  # also when there were no rows at all

            counts = dict(writer.write_all(checked(stream), threads=threads))
    timings["read_check_write_s"] = time.perf_counter() - t0
    return reconcile(store, keys, counts, layout, EXTRACTION, timings, log)
