"""Embeddings in PostgreSQL + pgvector: versioned tables behind stable views, switched atomically.

Each model version loads into its own tables (`item_emb__<v>`, `user_emb__<v>`) with binary
COPY, then gets its HNSW indexes; only then are the public views `item_emb` and `user_emb`
re-pointed, both in one transaction, so a reader sees the old version or the new one, never an
empty or half-loaded table. Two HNSW indexes per item table: inner product (the model's score,
for user -> item) and cosine (item -> item similarity, where an item is its own nearest
neighbour; under inner product it need not be).
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import psycopg
from psycopg import sql

from recsys_platform.errors import RecsysError
from recsys_platform.vectors.literal import vector_literal
from recsys_platform.vectors.rules import Rules

VERSIONS_TABLE = "recsys_vector_versions"
ATTRIBUTES_TABLE = "item_attributes"       # what the rules read of each item (vectors/catalog.py loads it)
PURCHASES_TABLE = "customer_purchases"     # (customer, product) each customer bought
_VERSION_RE = re.compile(r"^[0-9A-Za-z_]+$")


class VectorStoreError(RecsysError):
    """The vector database is unreachable or a load cannot proceed; the previous version serves on."""


class VectorDataError(RecsysError):
    """The database refused a query's values (a NUL in a code, an integer out of range...): the
    fault of the records in that query, not an outage; retrying the same values cannot help."""


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def _set_ef_search(conn: psycopg.Connection, value: int) -> None:
    """A plain HNSW scan of `value` candidates (the query connection is shared: each query sets its mode)."""
    conn.execute("SELECT set_config('hnsw.ef_search', %s, false), set_config('hnsw.iterative_scan', 'off', false)",
                 (str(int(value)),))


def _set_filtered_scan(conn: psycopg.Connection, ef_search: int, max_scan_tuples: int) -> None:
    """An HNSW scan that goes on past `ef_search` candidates until enough rows pass the query's
    filters (pgvector's iterative scan, relaxed order: the caller sorts what it keeps), visiting
    at most `max_scan_tuples` index tuples."""
    conn.execute("SELECT set_config('hnsw.ef_search', %s, false), set_config('hnsw.iterative_scan', 'relaxed_order', "
                 "false), set_config('hnsw.max_scan_tuples', %s, false)", (str(int(ef_search)), str(int(max_scan_tuples))))


def _table(kind: str, version: str) -> str:
    if not _VERSION_RE.match(version):
        raise VectorStoreError(f"unsafe model version name {version!r}")
    return f"{kind}_emb__{version.lower()}"


@dataclass(frozen=True)
class Neighbour:
    """An item found for a query, with its score (inner product or cosine similarity)."""

    id: str
    score: float

    def to_json(self) -> dict:
        """The one wire form of a neighbour, in records and HTTP answers: `{"id", "score"}`."""
        return {"id": self.id, "score": round(self.score, 6)}

    @classmethod
    def from_json(cls, obj: dict) -> Neighbour:
        return cls(str(obj["id"]), float(obj["score"]))


@dataclass(frozen=True)
class SessionQuery:
    """What a session needs from the store: items for the user vector (None: the stored vector of
    `customer`) unless `recommend` is off, items similar to `anchor` (None: none), and which of
    `products` the catalog holds. Both lists obey `rules` and hold none of `products`."""

    user_vector: np.ndarray | None
    customer: int | None
    anchor: str | None
    products: frozenset[str]
    rules: Rules = field(default_factory=Rules)
    recommend: bool = True


@dataclass(frozen=True)
class SessionNeighbours:
    recommended: list[Neighbour]
    similar: list[Neighbour]
    user_found: bool              # False: no user vector given and the customer has none stored
    unknown_products: list[str]   # the session's products that are not in the catalog
    short: tuple[str, ...] = ()   # the lists that hold fewer than k items because fewer pass the rules

    def note(self, k: int) -> str | None:
        """Why a list holds fewer than k items, or None: the one wording of the stream's records,
        the routes' header and the campaign table."""
        counts = {"recommended_items": len(self.recommended), "similar_items": len(self.similar)}
        return "; ".join(f"only {counts[name]} items pass the rules for {name} (of {k} asked)"
                         for name in self.short) or None


# What an item must satisfy to be recommended or offered as similar (`rules.Rules`, per query row
# `q`; `a` is the item's attributes, `i` the item): first what its attributes decide (how many items
# pass them chooses the search, below), then what the session decides.
ATTRIBUTE_RULES_SQL = """(NOT q.in_stock_only OR a.in_stock > 0)
    AND (q.lines IS NULL OR a.product_line = ANY(q.lines))
    AND (q.excluded_lines IS NULL OR a.product_line IS NULL OR a.product_line <> ALL(q.excluded_lines))
    AND (q.min_price IS NULL OR a.price >= q.min_price) AND (q.max_price IS NULL OR a.price <= q.max_price)"""
SESSION_RULES_SQL = f"""i.id <> ALL(q.products)
    AND NOT (q.exclude_bought AND EXISTS (
        SELECT 1 FROM {PURCHASES_TABLE} p WHERE p.customer = q.customer AND p.product = i.id))"""
RULES_SQL = f"{ATTRIBUTE_RULES_SQL}\n    AND {SESSION_RULES_SQL}"
SEP = "\x1f"  # joins a row's lists into one text value (no event, route or source value holds it)
# A rule that leaves at most this many items is searched exactly: the distances of so few items cost
# less than a graph walk that meets one passing item in a hundred, and recall is 1 (docs/ml.md: at 1%
# of 100,000 items the iterative scan, forced, kept 0.727 of the exact top 10 at 163 queries/s;
# exact search over those 1,000 items kept all of it at 383).
EXACT_MAX_PASSING = 2_000
MAX_SCAN_TUPLES = 20_000  # index tuples an iterative scan visits at most before the exact fallback


class VectorStore:
    """A pgvector database: load versions, switch them, query them in batches."""

    def __init__(self, dsn: str, connect_timeout: int = 10, query_timeout_s: float = 10.0,
                 revive: Callable[[], object] | None = None):
        """`revive`: what starts the server again when a connection fails (the embedded server's
        start, given by `wiring.vector_store`); None for a managed database, which restarts itself."""
        self.dsn = dsn
        self.connect_timeout = connect_timeout
        self.query_timeout_s = query_timeout_s  # statement_timeout of the query connections
        self._local = threading.local()  # one reusable query connection per thread
        self.revive = revive
        self._revive_lock = threading.Lock()

    def _query_conn(self) -> psycopg.Connection:
        """A cached autocommit connection for reads; reopened if the server dropped it."""
        conn = getattr(self._local, "conn", None)
        if conn is None or conn.closed or conn.broken:
            from psycopg.conninfo import conninfo_to_dict

            options = conninfo_to_dict(self.dsn).get("options") or ""
            timeout = f"-c statement_timeout={int(self.query_timeout_s * 1000)}"  # set at connect: no round trip
            conn = self._local.conn = self.connect(autocommit=True, options=f"{options} {timeout}".strip())
        return conn

    def _read(self, fn):
        """Run `fn(conn)` on the cached connection, retrying once on a dropped connection.

        An unreachable server or a timeout raises `VectorStoreError` (an outage: retry later);
        values the database refuses raise `VectorDataError` (the records' fault: do not retry).
        """
        try:
            try:
                return fn(self._query_conn())
            except psycopg.OperationalError:
                self._local.conn = None
                return fn(self._query_conn())
        except psycopg.OperationalError as e:
            raise VectorStoreError(f"the vector database failed a query: {_first_line(e)}") from None
        except (psycopg.DataError, UnicodeError) as e:
            raise VectorDataError(f"the vector database refused a value: {_first_line(e)}") from None
        except psycopg.errors.UndefinedTable as e:
            missing = _first_line(e)
            hint = ("; materialise item_attributes (model_and_vectors_job or item_attributes_job) before serving"
                    if ATTRIBUTES_TABLE in missing or PURCHASES_TABLE in missing else "")
            raise VectorStoreError(f"the vector database lacks a table: {missing}{hint}") from None

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def connect(self, autocommit: bool = False, **params) -> psycopg.Connection:
        """A new connection; when it fails and the store can `revive` its server, once more after that."""
        def attempt() -> psycopg.Connection:
            return psycopg.connect(self.dsn, autocommit=autocommit, connect_timeout=self.connect_timeout, **params)

        try:
            return attempt()
        except psycopg.OperationalError as e:
            error = e
        if self.revive is not None:
            with self._revive_lock:  # one restart for all the threads that found the server down
                try:
                    return attempt()
                except psycopg.OperationalError:
                    try:
                        self.revive()
                        return attempt()
                    except (psycopg.OperationalError, RecsysError) as e:
                        error = e
        raise VectorStoreError(f"cannot connect to the vector database: {_first_line(error)}") from None

    def ensure_schema(self) -> None:
        with self.connect(autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            conn.execute(f"""CREATE TABLE IF NOT EXISTS {VERSIONS_TABLE} (
                version text PRIMARY KEY, dim int NOT NULL, items int NOT NULL, users int NOT NULL,
                loaded_at timestamptz NOT NULL DEFAULT now(), activated_at timestamptz)""")

    # -- loading ------------------------------------------------------------------------------
    def load_version(self, version: str, items: tuple[Sequence[str], np.ndarray],
                     users: tuple[Sequence, np.ndarray], dim: int, m: int = 16,
                     ef_construction: int = 64) -> dict[str, float]:
        """Load one version's tables with binary COPY and build their HNSW indexes (not active yet).

        Idempotent: an earlier partial load of the same version is dropped first.
        """
        self.ensure_schema()
        if self.active_version() == version:
            raise VectorStoreError(f"version {version!r} is active and serving; it is never reloaded in place")
        timings: dict[str, float] = {}
        item_t, user_t = _table("item", version), _table("user", version)
        from pgvector.psycopg import register_vector

        with self.connect() as conn:
            register_vector(conn)
            conn.execute("SET maintenance_work_mem = '256MB'")
            for name in (item_t, user_t):
                conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(name)))
            conn.execute(sql.SQL("CREATE TABLE {} (id varchar(64) PRIMARY KEY, embedding vector({}) NOT NULL)").format(
                sql.Identifier(item_t), sql.Literal(dim)))
            conn.execute(sql.SQL("CREATE TABLE {} (id integer PRIMARY KEY, embedding vector({}) NOT NULL)").format(
                sql.Identifier(user_t), sql.Literal(dim)))
            t = time.perf_counter()
            self._copy(conn, item_t, [str(i) for i in items[0]], items[1], dim)
            self._copy(conn, user_t, [int(i) for i in users[0]], users[1], dim)
            timings["copy_s"] = time.perf_counter() - t
            t = time.perf_counter()
            with_ = sql.SQL("WITH (m = {}, ef_construction = {})").format(sql.Literal(m), sql.Literal(ef_construction))
            for name, ops in ((item_t, "vector_ip_ops"), (item_t, "vector_cosine_ops"), (user_t, "vector_ip_ops")):
                conn.execute(sql.SQL("CREATE INDEX {} ON {} USING hnsw (embedding {}) {}").format(
                    sql.Identifier(f"{name}_{ops.split('_')[1]}_hnsw"), sql.Identifier(name), sql.SQL(ops), with_))
            conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(item_t)))
            conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(user_t)))
            conn.execute(f"""INSERT INTO {VERSIONS_TABLE} (version, dim, items, users) VALUES (%s, %s, %s, %s)
                ON CONFLICT (version) DO UPDATE SET dim = EXCLUDED.dim, items = EXCLUDED.items,
                users = EXCLUDED.users, loaded_at = now()""", (version, dim, len(items[0]), len(users[0])))
            timings["index_s"] = time.perf_counter() - t
            conn.commit()
        return timings

    @staticmethod
    def _copy(conn, table: str, ids: list, vectors: np.ndarray, dim: int) -> None:
        from pgvector import Vector

        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.shape != (len(ids), dim):
            raise VectorStoreError(f"{table}: vectors have shape {vectors.shape}, expected ({len(ids)}, {dim})")
        if not np.all(np.isfinite(vectors)):
            raise VectorStoreError(f"{table}: vectors hold NaN or infinity")
        id_type = "varchar" if ids and isinstance(ids[0], str) else "integer"
        with conn.cursor().copy(sql.SQL("COPY {} (id, embedding) FROM STDIN WITH (FORMAT BINARY)").format(
                sql.Identifier(table))) as copy:
            copy.set_types([id_type, "vector"])
            for i, v in zip(ids, vectors):
                copy.write_row((i, Vector(v)))

    def activate(self, version: str) -> None:
        """Point `item_emb` and `user_emb` at `version`, both in one transaction."""
        with self.connect() as conn:
            row = conn.execute(f"SELECT 1 FROM {VERSIONS_TABLE} WHERE version = %s", (version,)).fetchone()
            if row is None:
                raise VectorStoreError(f"version {version!r} is not loaded; load it before activating")
            for kind in ("item", "user"):
                view = f"{kind}_emb"
                conn.execute(sql.SQL("DROP VIEW IF EXISTS {}").format(sql.Identifier(view)))
                conn.execute(sql.SQL("CREATE VIEW {} AS SELECT id, embedding FROM {}").format(
                    sql.Identifier(view), sql.Identifier(_table(kind, version))))
            conn.execute(f"UPDATE {VERSIONS_TABLE} SET activated_at = now() WHERE version = %s", (version,))
            conn.commit()

    def active_version(self) -> str | None:
        """The version the public views show (None before the first activation)."""
        def query(conn):
            if conn.execute("SELECT to_regclass(%s)", (VERSIONS_TABLE,)).fetchone()[0] is None:
                return None
            row = conn.execute(f"""SELECT version FROM {VERSIONS_TABLE} WHERE activated_at IS NOT NULL
                ORDER BY activated_at DESC LIMIT 1""").fetchone()
            return row[0] if row else None

        return self._read(query)

    def retain(self, keep: int = 2) -> list[str]:
        """Drop the tables of all but the `keep` most recently loaded versions (never the active one)."""
        active = self.active_version()
        with self.connect() as conn:
            versions = [r[0] for r in conn.execute(f"SELECT version FROM {VERSIONS_TABLE} ORDER BY loaded_at DESC")]
            dropped = [v for v in versions[keep:] if v != active]
            for v in dropped:
                for kind in ("item", "user"):
                    conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(_table(kind, v))))
                conn.execute(f"DELETE FROM {VERSIONS_TABLE} WHERE version = %s", (v,))
            conn.commit()
        return dropped

    # -- queries (the active views, or one loaded version's tables) ------------------------------
    @staticmethod
    def _relation(kind: str, version: str | None) -> str:
        return f'"{_table(kind, version)}"' if version else f"{kind}_emb"

    def items_for_users(self, vectors: np.ndarray, k: int = 10, exclude: Sequence[set[str]] | None = None,
                        ef_search: int = 100, version: str | None = None) -> list[list[Neighbour]]:
        """Top-k items by inner product for each user vector, in one round trip."""

        exclude = exclude or [set()] * len(vectors)
        extra = max((len(e) for e in exclude), default=0)
        def query(conn):
            _set_ef_search(conn, max(ef_search, k + extra))
            return conn.execute(f"""
                SELECT q.ord, r.id, r.score FROM unnest(%s::text[]) WITH ORDINALITY AS q(v, ord)
                CROSS JOIN LATERAL (
                    SELECT i.id, -(i.embedding <#> q.v::vector) AS score FROM {self._relation("item", version)} i
                    ORDER BY i.embedding <#> q.v::vector LIMIT %s) r
                ORDER BY q.ord, r.score DESC""", ([vector_literal(v) for v in vectors], k + extra)).fetchall()

        rows = self._read(query)
        out: list[list[Neighbour]] = [[] for _ in vectors]
        for ord_, item, score in rows:
            n = ord_ - 1
            if item not in exclude[n] and len(out[n]) < k:
                out[n].append(Neighbour(item, float(score)))
        return out

    def similar_items(self, item_ids: Sequence[str], k: int = 10, ef_search: int = 100,
                      version: str | None = None) -> list[list[Neighbour]]:
        """For each item, the k most similar other items by cosine, in one round trip."""
        items = self._relation("item", version)

        def query(conn):
            _set_ef_search(conn, max(ef_search, k + 1))
            return conn.execute(f"""
                SELECT q.ord, r.id, r.score FROM unnest(%s::text[]) WITH ORDINALITY AS q(id, ord)
                JOIN {items} s ON s.id = q.id
                CROSS JOIN LATERAL (
                    SELECT i.id, 1 - (i.embedding <=> s.embedding) AS score FROM {items} i
                    ORDER BY i.embedding <=> s.embedding LIMIT %s) r
                ORDER BY q.ord, r.score DESC""", (list(item_ids), k + 1)).fetchall()

        rows = self._read(query)
        out: list[list[Neighbour]] = [[] for _ in item_ids]
        for ord_, item, score in rows:
            n = ord_ - 1
            if item != item_ids[n] and len(out[n]) < k:
                out[n].append(Neighbour(item, float(score)))
        return out

    def known_items(self, item_ids: Sequence[str], version: str | None = None) -> set[str]:
        """Which of these product codes the catalog (active, or of `version`) holds."""
        rows = self._read(lambda conn: conn.execute(f"SELECT id FROM {self._relation('item', version)} WHERE id = ANY(%s)",
                                                    (list(item_ids),)).fetchall())
        return {r[0] for r in rows}

    def recommend_batch(self, queries: Sequence[SessionQuery], k: int = 10, ef_search: int = 100,
                        version: str | None = None) -> list[SessionNeighbours]:
        """Everything a batch of sessions needs from the store, in one round trip, under each
        query's rules: an HNSW scan that goes on until k items pass (iterative, at most
        MAX_SCAN_TUPLES index tuples); a list the scan left short is searched again exactly (a
        second round trip, only for those), so a list holds k items whenever k pass, and says
        so when fewer do. Never padded with an item the rules forbid."""
        codes = sorted({c for q in queries for c in q.products})
        rows = self._read(lambda conn: self._session_rows(conn, queries, k, ef_search, version, codes, exact=False))
        recommended: list[list[Neighbour]] = [[] for _ in queries]
        similar: list[list[Neighbour]] = [[] for _ in queries]
        user_found = [False] * len(queries)
        known = self._collect(rows, recommended, similar, user_found)

        def lacking(n: int) -> tuple[str, ...]:
            """The lists of query n that hold fewer than k items."""
            return ((("recommended_items",) if user_found[n] and len(recommended[n]) < k else ())
                    + (("similar_items",) if queries[n].anchor in known and len(similar[n]) < k else ()))

        short = [n for n in range(len(queries)) if lacking(n)]
        if short:
            again = [queries[n] for n in short]
            exact = self._read(lambda conn: self._session_rows(conn, again, k, ef_search, version, [], exact=True))
            rec, sim = [[] for _ in again], [[] for _ in again]
            self._collect(exact, rec, sim, [False] * len(again))
            for m, n in enumerate(short):
                recommended[n], similar[n] = rec[m], sim[m]
        return [SessionNeighbours(recommended[n], similar[n], user_found[n], sorted(q.products - known), lacking(n))
                for n, q in enumerate(queries)]

    @staticmethod
    def _collect(rows, recommended, similar, user_found) -> set[str]:
        """Rows of `_session_rows` into each query's lists, best first; returns the known codes."""
        known: set[str] = set()
        for kind, ord_, item, score in sorted(rows, key=lambda r: (r[0], r[1], -(r[3] or 0))):
            if kind == "p":
                known.add(item)
            elif kind == "u":
                user_found[ord_ - 1] = True
                if item is not None:
                    recommended[ord_ - 1].append(Neighbour(item, float(score)))
            elif item is not None:
                similar[ord_ - 1].append(Neighbour(item, float(score)))
        return known

    def _session_rows(self, conn, queries: Sequence[SessionQuery], k: int, ef_search: int, version: str | None,
                      codes: list[str], exact: bool) -> list:
        """('u'|'s'|'p', query number, item, score) rows. Each distinct rule of the batch gathers
        the items its attributes pass, once, up to one more than EXACT_MAX_PASSING (the scan stops
        there): when they are no more, a query's lists come from those items' distances (exact);
        otherwise from the HNSW index with an iterative scan. `exact`: every query exact (the
        fallback for lists left short)."""
        items, users = self._relation("item", version), self._relation("user", version)
        # ef_search sizes the walk's first candidate list (the iterative scan extends it): the
        # default 100 keeps 0.986 and 0.971 of the exact top 10 at 50% and 10% of 100,000 items (docs/ml.md)
        _set_filtered_scan(conn, max(ef_search, k + 1), MAX_SCAN_TUPLES)
        r = [q.rules for q in queries]

        def lists(search: str, candidates: str, rules: str, ip: str, cos: str) -> str:
            """The recommended ('u') and similar ('s') lists of the queries `search` selects, from
            `candidates` (items `i`) that pass `rules`."""
            return f"""
            SELECT 'u', q.ord, r.id, r.score FROM q LEFT JOIN LATERAL (
                SELECT i.id, -(i.embedding <#> q.uv) AS score FROM {candidates}
                WHERE {rules}
                ORDER BY {ip} LIMIT %(k)s) r ON true WHERE q.uv IS NOT NULL AND {search}
            UNION ALL
            SELECT 's', q.ord, r.id, r.score FROM q JOIN {items} s ON s.id = q.anchor CROSS JOIN LATERAL (
                SELECT i.id, 1 - (i.embedding <=> s.embedding) AS score FROM {candidates}
                WHERE {rules} AND i.id <> q.anchor
                ORDER BY {cos} LIMIT %(k)s) r WHERE {search}"""

        joined = f"{items} i JOIN {ATTRIBUTES_TABLE} a ON a.id = i.id"
        # the gathered items passed the attribute rules already: only the session's rules are left
        gathered = f"unnest(q.passing_ids) AS g(id) JOIN {items} i ON i.id = g.id"
        exact_order = ("(i.embedding <#> q.uv) + 0", "(i.embedding <=> s.embedding) + 0")  # no index orders these
        return conn.execute(f"""
            WITH t AS (
                SELECT t.ord, t.anchor, t.customer,
                       CASE WHEN t.recommend THEN COALESCE(
                           t.v::vector, (SELECT u.embedding FROM {users} u WHERE u.id = t.customer)) END AS uv,
                       string_to_array(t.products, chr(31)) AS products, t.in_stock_only, t.exclude_bought,
                       string_to_array(NULLIF(t.lines, ''), chr(31)) AS lines,
                       string_to_array(NULLIF(t.excluded_lines, ''), chr(31)) AS excluded_lines,
                       t.min_price, t.max_price
                FROM unnest(%(v)s::text[], %(customer)s::int[], %(anchor)s::text[], %(products)s::text[],
                            %(in_stock_only)s::bool[], %(bought)s::bool[], %(lines)s::text[], %(excluded)s::text[],
                            %(min_price)s::float8[], %(max_price)s::float8[], %(recommend)s::bool[])
                     WITH ORDINALITY AS t(v, customer, anchor, products, in_stock_only, exclude_bought, lines,
                                          excluded_lines, min_price, max_price, recommend, ord)),
            gathered AS MATERIALIZED (
                SELECT q.*, ARRAY(SELECT a.id FROM {ATTRIBUTES_TABLE} a WHERE {ATTRIBUTE_RULES_SQL}
                                  LIMIT %(exact_max)s + 1) AS ids
                FROM (SELECT DISTINCT in_stock_only, lines, excluded_lines, min_price, max_price FROM t) q),
            rules AS (
                SELECT g.*, CASE WHEN cardinality(g.ids) <= %(exact_max)s THEN g.ids END AS passing_ids FROM gathered g),
            q AS (
                SELECT t.*, c.passing_ids, %(exact)s OR c.passing_ids IS NOT NULL AS exact FROM t JOIN rules c
                ON (c.in_stock_only, c.lines, c.excluded_lines, c.min_price, c.max_price)
                   IS NOT DISTINCT FROM (t.in_stock_only, t.lines, t.excluded_lines, t.min_price, t.max_price))
            {lists("NOT q.exact", joined, RULES_SQL, "i.embedding <#> q.uv", "i.embedding <=> s.embedding")}
            UNION ALL
            {lists("q.exact AND q.passing_ids IS NOT NULL", gathered, SESSION_RULES_SQL, *exact_order)}
            UNION ALL
            {lists("q.exact AND q.passing_ids IS NULL", joined, RULES_SQL, *exact_order)}
            UNION ALL
            SELECT 'p', 0, i.id, 0 FROM {items} i WHERE i.id = ANY(%(codes)s)""",
            {"v": [vector_literal(q.user_vector) if q.user_vector is not None else None for q in queries],
             "customer": [q.customer for q in queries], "anchor": [q.anchor for q in queries],
             "products": [SEP.join(sorted(q.products)) for q in queries], "in_stock_only": [x.in_stock_only for x in r],
             "bought": [x.exclude_bought and q.customer is not None for x, q in zip(r, queries)],
             "lines": [SEP.join(x.product_lines) for x in r], "excluded": [SEP.join(x.exclude_product_lines) for x in r],
             "min_price": [x.min_price for x in r], "max_price": [x.max_price for x in r],
             "recommend": [q.recommend for q in queries], "k": k, "codes": codes, "exact": exact,
             "exact_max": EXACT_MAX_PASSING}).fetchall()

    def nearest_item_to_itself(self, ef_search: int = 100, version: str | None = None) -> tuple[int, list[str]]:
        """(items checked, ids whose nearest item by cosine is another item at a non-zero distance)."""
        items = self._relation("item", version)
        with self.connect() as conn:
            _set_ef_search(conn, ef_search)
            rows = conn.execute(f"""
                SELECT s.id, n.id, n.d FROM {items} s CROSS JOIN LATERAL (
                    SELECT i.id, i.embedding <=> s.embedding AS d FROM {items} i
                    ORDER BY i.embedding <=> s.embedding LIMIT 1) n""").fetchall()
        return len(rows), [s for s, n, d in rows if n != s and d > 1e-6]

    def item_ids(self, version: str | None = None) -> list[str]:
        """Every item with a vector (active, or of `version`)."""
        rows = self._read(lambda conn: conn.execute(f"SELECT id FROM {self._relation('item', version)}").fetchall())
        return [r[0] for r in rows]

    def user_ids(self, version: str | None = None) -> list[int]:
        """Every customer with a vector (active, or of `version`), in order."""
        rows = self._read(lambda conn: conn.execute(
            f"SELECT id FROM {self._relation('user', version)} ORDER BY id").fetchall())
        return [r[0] for r in rows]

    def counts(self, version: str | None = None) -> dict[str, int]:
        with self.connect() as conn:
            return {kind: conn.execute(f"SELECT count(*) FROM {self._relation(kind, version)}").fetchone()[0]
                    for kind in ("item", "user")}

    def dimensions(self, version: str | None = None) -> dict[str, int | None]:
        with self.connect() as conn:
            return {kind: (conn.execute(f"SELECT vector_dims(embedding) FROM {self._relation(kind, version)} LIMIT 1")
                           .fetchone() or [None])[0] for kind in ("item", "user")}
