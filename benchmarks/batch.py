"""Batch benchmark: `ratings_ml_training` from a MariaDB source, against floors and a naive baseline.

Measures rows/s, all in one run on the same data:
  - pipeline: this platform's `build` (validate + join + write + atomic publish), for both
    layouts (one folder per customer, hash buckets) and both extraction paths (SQLAlchemy->Arrow,
    Spark JDBC). The Spark session is started once beforehand and its start time reported apart.
  - floor_source: the `mariadb` command-line client streaming the same join to /dev/null.
  - floor_write: pyarrow writing the same rows as Hive-partitioned Parquet (per layout).
  - naive: pandas `read_sql` of the join + `to_parquet(partition_cols=...)` (per layout).
Ratios: pipeline vs the serial floor (source then write) and vs naive.

    . .services/env && python benchmarks/batch.py --scale 100
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow as pa  # noqa: E402
import pyarrow.dataset as pads  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from benchmarks.common import timer, write_results  # noqa: E402
from recsys_platform.batch.contract import Layout
from recsys_platform.batch.engines.spark import build  # noqa: E402
from recsys_platform.batch.seed import seed  # noqa: E402
from recsys_platform.batch.source import SourceDatabase  # noqa: E402
from recsys_platform.resources.spark import spark_config  # noqa: E402
from recsys_platform.storage.object_store import ObjectStore  # noqa: E402

JOIN_SQL = (
    "SELECT r.customerNumber, c.city, c.state, c.postalCode, c.country, c.creditLimit, r.productCode, "
    "p.productLine, p.productScale, p.quantityInStock, p.buyPrice, p.MSRP, r.productRating "
    "FROM ratings r JOIN products p USING (productCode) JOIN customers c USING (customerNumber)")


def ensure_source(server_url: str, scale: float) -> str:
    """A database `bench_s<scale>` on the server, seeded once at `scale`."""
    server = sa.engine.make_url(server_url)
    name = f"bench_s{str(scale).replace('.', '_')}"
    admin = sa.create_engine(server.set(database=""))
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE DATABASE IF NOT EXISTS {name}"))
    url = server.set(database=name).render_as_string(hide_password=False)
    engine = sa.create_engine(url)
    from recsys_platform.batch.seed import is_seeded

    if not is_seeded(engine):
        t = time.perf_counter()
        summary = seed(engine, scale=scale)
        print(f"seeded {name} in {time.perf_counter() - t:.0f}s: {summary}", flush=True)
    return url


def floor_source(url: str) -> float:
    u = sa.engine.make_url(url)
    env = {**os.environ, "MYSQL_PWD": u.password or ""}
    start = time.perf_counter()
    subprocess.run(["mariadb", "--quick", "--batch", "--skip-column-names", "-h", u.host, "-P", str(u.port),
                    "-u", u.username, "-e", JOIN_SQL, u.database], env=env, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def joined_arrow(url: str) -> pa.Table:
    import pandas as pd

    return pa.Table.from_pandas(pd.read_sql(JOIN_SQL, sa.create_engine(url)), preserve_index=False)


def floor_write(table: pa.Table, layout: Layout, out: str) -> float:
    if layout.buckets:
        buckets = table["customerNumber"].to_numpy() % layout.buckets
        table = table.append_column(layout.column, pa.array(buckets, pa.int32()))
    start = time.perf_counter()
    pads.write_dataset(table, out, format="parquet", partitioning=[layout.column], partitioning_flavor="hive",
                       max_partitions=1_000_000, existing_data_behavior="overwrite_or_ignore")
    return time.perf_counter() - start


def naive(url: str, layout: Layout, out: str) -> float:
    import pandas as pd

    start = time.perf_counter()
    df = pd.read_sql(JOIN_SQL, sa.create_engine(url))
    if layout.buckets:
        df[layout.column] = df["customerNumber"] % layout.buckets
    df.to_parquet(out, partition_cols=[layout.column], max_partitions=1_000_000)
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=100)
    parser.add_argument("--buckets", type=int, default=64, help="hash buckets for the bucket layout")
    parser.add_argument("--source-url", default=os.environ.get("RECSYS_TEST_MYSQL_URL", ""))
    parser.add_argument("--jar", default=os.environ.get("RECSYS_TEST_JDBC_JAR", "/usr/share/java/mariadb-java-client.jar"))
    parser.add_argument("--jdbc-partitions", type=int, default=4)
    args = parser.parse_args()
    if not args.source_url:
        parser.error("no MariaDB: start scripts/services.sh and source .services/env, or pass --source-url")

    url = ensure_source(args.source_url, args.scale)
    db = SourceDatabase(url)
    rows = db.count_ratings()
    customers = db.customer_numbers()
    results: dict = {"scale": args.scale, "rows": rows, "customers": len(customers), "runs": {}}
    work = Path(tempfile.mkdtemp(prefix="bench-batch-"))

    from pyspark.sql import SparkSession

    t = time.perf_counter()
    builder = SparkSession.builder
    for k, v in spark_config("local[2]", jars=args.jar).items():
        builder = builder.config(k, v)
    spark = builder.getOrCreate()
    results["spark_start_s"] = time.perf_counter() - t

    src_floor = min(floor_source(url) for _ in range(2))
    results["floor_source_s"] = src_floor
    table = joined_arrow(url)
    try:
        for layout in (Layout(0), Layout(args.buckets)):
            name = "per_customer" if not layout.buckets else f"hash_buckets_{layout.buckets}"
            keys = layout.partition_keys(customers)
            entry: dict = {"partitions": len(keys)}
            out = work / f"floor-{name}"
            entry["floor_write_s"] = floor_write(table, layout, str(out))
            shutil.rmtree(out, ignore_errors=True)
            out = work / f"naive-{name}"
            entry["naive_s"] = naive(url, layout, str(out))
            shutil.rmtree(out, ignore_errors=True)
            for use_jdbc in (False, True):
                path = "spark_jdbc" if use_jdbc else "sqlalchemy_arrow"
                store = ObjectStore.from_url((work / f"lake-{name}-{path}").as_uri())
                timings: dict = {}
                with timer(timings, "total_s"):
                    result = build(spark, db, store, keys, layout=layout, use_jdbc=use_jdbc,
                                   num_partitions=args.jdbc_partitions, log=lambda *_: None)
                assert result.rows == rows, (result.rows, rows)
                entry[f"pipeline_{path}_s"] = timings["total_s"]
                entry[f"pipeline_{path}_steps"] = result.timings
                shutil.rmtree(store.path(), ignore_errors=True)
            serial_floor = src_floor + entry["floor_write_s"]
            entry["rows_per_s"] = {
                "floor_source": rows / src_floor, "floor_write": rows / entry["floor_write_s"],
                "floor_serial": rows / serial_floor, "naive": rows / entry["naive_s"],
                **{p: rows / entry[f"pipeline_{p}_s"] for p in ("sqlalchemy_arrow", "spark_jdbc")},
            }
            entry["ratios"] = {
                **{f"{p}_time_vs_floor": entry[f"pipeline_{p}_s"] / serial_floor for p in ("sqlalchemy_arrow", "spark_jdbc")},
                **{f"{p}_speedup_vs_naive": entry["naive_s"] / entry[f"pipeline_{p}_s"] for p in ("sqlalchemy_arrow", "spark_jdbc")},
            }
            results["runs"][name] = entry
            print(f"{name}: " + ", ".join(f"{k}={v:,.0f} rows/s" for k, v in entry["rows_per_s"].items()), flush=True)
            print(f"{name}: " + ", ".join(f"{k}={v:.2f}" for k, v in entry["ratios"].items()), flush=True)
    finally:
        spark.stop()
        shutil.rmtree(work, ignore_errors=True)
    path = write_results("batch", results)
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
