"""Reading the source database: schema validation, per-customer versions, and Arrow extraction.

Works with any SQLAlchemy URL (SQLite for the embedded default, MySQL/MariaDB in production).
Every message names the table and column at fault and shows the URL with its password masked.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from dataclasses import dataclass

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from recsys_platform.batch.contract import (
    CUSTOMER_KEY,
    CUSTOMER_KEYED,
    PRODUCT_KEY,
    SOURCE_COLUMNS,
    Selection,
    bucket_sql,
)
from recsys_platform.errors import DataQualityError, SourceSchemaError, SourceUnavailableError


def masked_url(url: str) -> str:
    """The URL with any password replaced by ***, safe for logs and errors."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL has nothing we can safely show
        return "<unparsable database URL>"


def _type_family(sa_type: sa.types.TypeEngine) -> str:
    if isinstance(sa_type, sa.Integer):
        return "integer"
    if isinstance(sa_type, (sa.Numeric, sa.Float)):
        return "numeric"
    if isinstance(sa_type, (sa.String, sa.Text, sa.Enum)):
        return "string"
    name = str(sa_type).upper()
    if "INT" in name:
        return "integer"
    if any(t in name for t in ("DEC", "NUM", "REAL", "FLOA", "DOUB")):
        return "numeric"
    if any(t in name for t in ("CHAR", "TEXT", "CLOB")):
        return "string"
    return name.lower()


def _expected_family(arrow_type: pa.DataType) -> set[str]:
    if pa.types.is_integer(arrow_type):
        return {"integer"}
    if pa.types.is_floating(arrow_type):
        return {"numeric", "integer"}
    return {"string"}


@dataclass
class SourceDatabase:
    """A connection to the operational database behind a SQLAlchemy URL.

    A SQLite URL naming a missing file is an error, never an empty database created on the
    spot, unless `create` (the `seed` command and the demo's own embedded source).
    """

    url: str
    create: bool = False

    def __post_init__(self) -> None:
        self._engine: sa.Engine | None = None

    @property
    def masked_url(self) -> str:
        return masked_url(self.url)

    @property
    def dialect(self) -> str:
        """`sqlite`, `mysql` (MySQL and MariaDB) or `postgresql`."""
        backend = make_url(self.url).get_backend_name()
        return "mysql" if backend == "mariadb" else backend

    @property
    def engine(self) -> sa.Engine:
        if self._engine is None:
            try:
                self._engine = sa.create_engine(self.url, pool_pre_ping=True)
            except Exception as e:
                raise SourceUnavailableError(
                    f"cannot use the source database URL {self.masked_url}: {type(e).__name__}"
                ) from None
        return self._engine

    def dispose(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def connect(self) -> sa.Connection:
        u = make_url(self.url)
        if u.get_backend_name() == "sqlite" and not self.create and u.database not in (None, "", ":memory:") \
                and not os.path.exists(u.database):
            raise SourceUnavailableError(
                f"the SQLite source {u.database} does not exist: check RECSYS_SOURCE_URL, or create it "
                f"with `recsys-platform seed --source-url {self.masked_url}`")
        try:
            return self.engine.connect()
        except sa.exc.SQLAlchemyError as e:
            reason = str(getattr(e, "orig", e)).replace(make_url(self.url).password or "\0", "***")
            raise SourceUnavailableError(
                f"cannot connect to the source database {self.masked_url}: {reason.strip()}; check "
                f"RECSYS_SOURCE_URL and that the server at {make_url(self.url).host or 'localhost'} is running"
            ) from None

    # -- schema -----------------------------------------------------------------------------
    def validate_schema(self) -> None:
        """Raise SourceSchemaError naming every missing table, missing column or wrong type."""
        with self.connect() as conn:
            insp = sa.inspect(conn)
            problems = []
            for table, columns in SOURCE_COLUMNS.items():
                if not insp.has_table(table):
                    problems.append(f"table {table} is missing")
                    continue
                found = {c["name"]: c["type"] for c in insp.get_columns(table)}
                for column, arrow_type in columns.items():
                    if column not in found:
                        problems.append(
                            f"column {table}.{column} is missing (found: {', '.join(sorted(found))})")
                        continue
                    family = _type_family(found[column])
                    if family not in _expected_family(arrow_type):
                        problems.append(
                            f"column {table}.{column} has type {found[column]}, expected "
                            f"{' or '.join(sorted(_expected_family(arrow_type)))}")
        if problems:
            raise SourceSchemaError(
                f"the source database {self.masked_url} does not match the contract: " + "; ".join(problems)
                + "; fix the table, or point RECSYS_SOURCE_URL at a classicmodels database with ratings")

    def enforced_rules(self) -> dict[str, str]:
        """The contract's rules the database itself guarantees, rule -> by what; a build need not
        check them again. Only `unique_ratings`, from a primary key or unique constraint on exactly
        (customerNumber, productCode): a key holds for every row on any engine, whereas foreign
        keys can be switched off while loading (MySQL's foreign_key_checks, SQLite by default) and
        a NOT NULL key costs nothing to check in the one pass the row rules take anyway."""
        pair = {CUSTOMER_KEY, PRODUCT_KEY}
        with self.connect() as conn:
            insp = sa.inspect(conn)
            keys = [("primary key", insp.get_pk_constraint("ratings").get("constrained_columns") or [])]
            keys += [(f"unique constraint {u.get('name') or ''}".strip(), u["column_names"])
                     for u in insp.get_unique_constraints("ratings")]
            keys += [(f"unique index {i['name']}", i["column_names"])
                     for i in insp.get_indexes("ratings") if i.get("unique")]
        for what, columns in keys:
            if set(columns) == pair and len(columns) == 2:
                return {"unique_ratings": f"the source's {what} ({', '.join(columns)})"}
        return {}

    # -- customers and their versions ---------------------------------------------------------
    def customer_numbers(self) -> list[int]:
        """Every customer that has at least one rating, ascending."""
        with self.connect() as conn:
            rows = conn.execute(sa.text(
                'SELECT DISTINCT customerNumber FROM ratings WHERE customerNumber IS NOT NULL '
                'ORDER BY customerNumber'))
            return [int(r[0]) for r in rows]

    def customer_versions(self, selection: Selection | None = None) -> dict[int, str]:
        """Per customer: a version string `<count>-<sha1 prefix>` of that customer's ratings.

        Computed from the ordered rows so it is the same on SQLite and MySQL; one streaming pass.
        """
        where, params = customer_filter(selection)
        where = (where + " AND" if where else " WHERE") + " customerNumber IS NOT NULL"
        versions: dict[int, str] = {}
        current, digest, count = None, hashlib.sha1(), 0
        with self.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=50_000).execute(sa.text(
                f"SELECT customerNumber, productCode, productRating FROM ratings{where} "
                "ORDER BY customerNumber, productCode"), params)
            for customer, product, rating in result:
                if customer != current:
                    if current is not None:
                        versions[int(current)] = f"{count}-{digest.hexdigest()[:16]}"
                    current, digest, count = customer, hashlib.sha1(), 0
                digest.update(f"{product}\x1f{rating}\x1e".encode())
                count += 1
            if current is not None:
                versions[int(current)] = f"{count}-{digest.hexdigest()[:16]}"
        return versions

    def count_ratings(self, selection: Selection | None = None) -> int:
        where, params = customer_filter(selection)
        with self.connect() as conn:
            return int(conn.execute(sa.text(f"SELECT COUNT(*) FROM ratings{where}"), params).scalar_one())

    # -- what customers bought ------------------------------------------------------------------
    def purchases(self) -> tuple[list[tuple[int, str]], list[str]]:
        """Every distinct (customerNumber, productCode) a customer bought, ascending, and where from:
        `ratings` (a rating is a purchase) and, where the source has classicmodels' `orders` and
        `orderdetails`, every order line of an order that was not cancelled."""
        with self.connect() as conn:
            insp = sa.inspect(conn)
            sources = ["ratings"] + (["orders"] if insp.has_table("orders") and insp.has_table("orderdetails") else [])
            query = f"SELECT {CUSTOMER_KEY}, {PRODUCT_KEY} FROM ratings WHERE {CUSTOMER_KEY} IS NOT NULL"
            if "orders" in sources:
                query += (" UNION SELECT o.customerNumber, d.productCode FROM orders o JOIN orderdetails d "
                          "ON d.orderNumber = o.orderNumber WHERE o.status <> 'Cancelled'")
            rows = conn.execute(sa.text(f"SELECT * FROM ({query}) AS bought ORDER BY 1, 2"))
            return [(int(c), str(p)) for c, p in rows], sources

    # -- extraction ---------------------------------------------------------------------------
    def read_arrow(self, table: str, selection: Selection | None = None, batch_rows: int = 50_000) -> pa.Table:
        """Stream one source table (the contract's columns) into Arrow, filtered to a selection."""
        columns = SOURCE_COLUMNS[table]
        where, params = customer_filter(selection) if table in CUSTOMER_KEYED else ("", {})
        sql = f"SELECT {', '.join(columns)} FROM {table}{where}"
        arrow_schema = pa.schema([(c, t) for c, t in columns.items()])
        batches = []
        with self.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=batch_rows).execute(sa.text(sql), params)
            for part in result.partitions(batch_rows):
                cols = list(zip(*part))
                batches.append(pa.record_batch(
                    [_to_arrow(table, name, values, typ) for (name, typ), values in zip(columns.items(), cols)],
                    schema=arrow_schema))
        return pa.Table.from_batches(batches, schema=arrow_schema)


MAX_BIND_PARAMETERS = 1_000


def customer_filter(selection: Selection | None, inline: bool = False,
                    column: str = CUSTOMER_KEY) -> tuple[str, dict]:
    """A WHERE clause on customerNumber for a selection, and its bind parameters.

    With bind parameters (`:c0, :c1, ...`) by default. `inline=True` renders the same clause with
    the (already validated) integers written out, for Spark JDBC's `dbtable`, which takes no
    parameters, and for connectorx, and for lists longer than MAX_BIND_PARAMETERS (SQLite refuses more than 32,766);
    either way each value is an `int` from `Selection`, never text from outside.
    """
    if selection is None or selection.everything:
        return "", {}
    if selection.buckets:
        column, values = bucket_sql(selection.buckets, column), selection.bucket_keys
    else:
        values = selection.customers
    if not values:
        return " WHERE 1 = 0", {}
    if inline or len(values) > MAX_BIND_PARAMETERS:
        return f" WHERE {column} IN ({', '.join(str(int(v)) for v in values)})", {}
    params = {f"c{i}": int(v) for i, v in enumerate(values)}
    return f" WHERE {column} IN ({', '.join(':' + k for k in params)})", params


def _to_arrow(table: str, column: str, values: Iterable, typ: pa.DataType) -> pa.Array:
    values = list(values)
    try:
        if pa.types.is_floating(typ):
            return pa.array([None if v is None else float(v) for v in values], type=typ)
        if pa.types.is_integer(typ):
            return pa.array([None if v is None else _as_int(v) for v in values], type=typ)
        return pa.array([None if v is None else str(v) for v in values], type=typ)
    except (TypeError, ValueError, pa.ArrowInvalid) as e:
        bad = next((v for v in values if not _fits(v, typ)), None)
        raise DataQualityError(
            f"column {table}.{column} holds a value that is not {typ}: {bad!r} ({e})",
            [{"check": "types", "table": table, "column": column, "example": repr(bad)}],
        ) from None


def _as_int(v) -> int:
    if isinstance(v, bool) or (isinstance(v, float) and not v.is_integer()):
        raise ValueError(f"{v!r} is not a whole number")
    if isinstance(v, str):
        return int(v.strip())
    out = int(v)
    if out != v:
        raise ValueError(f"{v!r} is not a whole number")
    return out


def _fits(v, typ: pa.DataType) -> bool:
    if v is None:
        return True
    try:
        if pa.types.is_integer(typ):
            _as_int(v)
        elif pa.types.is_floating(typ):
            float(v)
        return True
    except (TypeError, ValueError):
        return False
