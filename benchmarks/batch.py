"""Batch benchmark: `ratings_ml_training` from a MariaDB source, both engines against floors and naive.

In one run, on the same data, for each scale and both layouts (one folder per customer; hash
buckets), in rows/s and seconds:
  - floor_source: the `mariadb` command-line client streaming the lab's join to /dev/null;
  - floor_write: pyarrow writing the same rows as Hive-partitioned Parquet;
  - floor_serial: the two one after the other (what a pipeline that does not overlap reaches);
  - naive: pandas `read_sql` of the join + `to_parquet(partition_cols=...)`;
  - arrow: this platform's Arrow engine (validate in SQL, connectorx stream, per-partition writes);
  - spark_jdbc: this platform's Spark engine, Spark JDBC extraction (the session started beforehand).
Peak memory of the Arrow engine and of naive, each in a fresh child process: its own high-water
mark (VmHWM), and its anonymous and file-backed resident memory sampled every 20 ms.
Ratios: each engine's time over floor_serial, and naive's time over each engine's.
Then, at scale 1 on SQLite: one partition materialized through Dagster in-process (a fresh
process, as a run launched from the UI is), and `recsys-platform demo` from a fresh home.

    . .services/env && python benchmarks/batch.py --scales 100            # make bench-batch
    . .services/env && python benchmarks/batch.py --scales 100 1000       # scale 1000 on demand
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pyarrow as pa  # noqa: E402
import pyarrow.dataset as pads  # noqa: E402
import sqlalchemy as sa  # noqa: E402

from benchmarks.common import write_results  # noqa: E402
from recsys_platform.batch.contract import COLUMN_NAMES, Layout  # noqa: E402
from recsys_platform.batch.engines import arrow, spark  # noqa: E402
from recsys_platform.batch.engines.spark_config import (  # noqa: E402
    local_workers_run_this_interpreter,
    spark_config,
)
from recsys_platform.batch.seed import is_seeded, seed  # noqa: E402
from recsys_platform.batch.source import SourceDatabase  # noqa: E402
from recsys_platform.storage.object_store import ObjectStore  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
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
    if not is_seeded(engine):
        t = time.perf_counter()
        summary = seed(engine, scale=scale)
        print(f"seeded {name} in {time.perf_counter() - t:.0f}s: {summary}", flush=True)
    return url


# -- floors and naive -------------------------------------------------------------------------------
def floor_source(url: str) -> float:
    u = sa.engine.make_url(url)
    env = {**os.environ, "MYSQL_PWD": u.password or ""}
    start = time.perf_counter()
    subprocess.run(["mariadb", "--quick", "--batch", "--skip-column-names", "-h", u.host, "-P", str(u.port),
                    "-u", u.username, "-e", JOIN_SQL, u.database], env=env, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def joined_arrow(url: str) -> pa.Table:
    import connectorx as cx

    return cx.read_sql(arrow.connectorx_url(url), JOIN_SQL, return_type="arrow")


def floor_write(table: pa.Table, layout: Layout, out: str) -> float:
    if layout.buckets:
        buckets = table["customerNumber"].to_numpy() % layout.buckets
        table = table.append_column(layout.column, pa.array(buckets, pa.int32()))
    start = time.perf_counter()
    pads.write_dataset(table, out, format="parquet", partitioning=[layout.column], partitioning_flavor="hive",
                       max_partitions=1_000_000, existing_data_behavior="overwrite_or_ignore")
    return time.perf_counter() - start


def _naive(url: str, buckets: int, out: str) -> int:
    import pandas as pd

    layout = Layout(buckets)
    df = pd.read_sql(JOIN_SQL, sa.create_engine(url))
    if layout.buckets:
        df[layout.column] = df["customerNumber"] % layout.buckets
    df.to_parquet(out, partition_cols=[layout.column], max_partitions=1_000_000)
    return len(df)


def _arrow_engine(url: str, buckets: int, out: str) -> int:
    db = SourceDatabase(url)
    layout = Layout(buckets)
    keys = layout.partition_keys(db.customer_numbers())
    return arrow.build(db, ObjectStore.from_url(Path(out).as_uri()), keys, layout=layout, log=lambda *_: None).rows


def _rss_kinds() -> dict[str, int]:
    """This process's resident memory now, by kind (bytes): anonymous (heap, Arrow buffers) and
    file-backed (libraries, memory-mapped files: clean pages the kernel can drop at any time)."""
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f if line.startswith(("RssAnon", "RssFile", "VmHWM")))
    return {k: int(v.split()[0]) * 1024 for k, v in fields.items()}


class _PeakSampler(threading.Thread):
    """Samples the resident memory by kind every 20 ms; max RSS alone cannot tell them apart."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.baseline = _rss_kinds()
        self.peak = dict(self.baseline)
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.02):
            for kind, value in _rss_kinds().items():
                self.peak[kind] = max(self.peak.get(kind, 0), value)


def _child(queue, fn, args) -> None:
    import connectorx  # noqa: F401 - imports are paid once per process, not per build: not timed
    import pandas  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    sampler = _PeakSampler()
    sampler.start()
    start = time.perf_counter()
    rows = fn(*args)
    seconds = time.perf_counter() - start
    sampler.done.set()
    sampler.join()
    kinds = {"baseline_anon": sampler.baseline["RssAnon"], "peak_anon": sampler.peak["RssAnon"],
             "baseline_file": sampler.baseline["RssFile"], "peak_file": sampler.peak["RssFile"]}
    # This process's own peak (VmHWM). Not getrusage's ru_maxrss: Linux carries the forked parent's
    # high-water mark across exec into it, so it counted the benchmark's own copy of the table.
    queue.put((rows, seconds, _rss_kinds()["VmHWM"], kinds))


def in_child(fn, *args) -> tuple[int, float, int, dict[str, int]]:
    """(rows, seconds, peak RSS bytes, resident memory by kind) of fn(*args) in a fresh process:
    memory of that work alone."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(queue, fn, args))
    proc.start()
    result = queue.get()
    proc.join()
    if proc.exitcode:
        raise RuntimeError(f"{fn.__name__} failed in its child process (exit {proc.exitcode})")
    return result


# -- one partition through Dagster, and the demo ----------------------------------------------------
ONE_PARTITION = """
import time, sys
started = time.perf_counter()
import dagster as dg
from recsys_platform.definitions import build_definitions
from recsys_platform.settings import Settings
settings = Settings.from_env()
defs = build_definitions(settings)
instance = dg.DagsterInstance.from_config(sys.argv[1])
instance.add_dynamic_partitions("customers", [sys.argv[2]])
loaded = time.perf_counter()
result = defs.resolve_job_def("ratings_ml_training_job").execute_in_process(
    instance=instance, partition_key=sys.argv[2], run_config={"loggers": {"file": {"config": {"path": sys.argv[3]}}}})
assert result.success
print(f"{time.perf_counter() - loaded} {time.perf_counter() - started}")
"""


def dagster_one_partition(home: Path) -> dict:
    """A fresh process materializes one customer's partition in-process (what a UI launch runs)."""
    env = {**os.environ, "RECSYS_HOME": str(home)}
    subprocess.run([sys.executable, "-m", "recsys_platform.cli", "seed"], env=env, check=True, capture_output=True)
    customer = str(SourceDatabase(f"sqlite:///{home / 'classicmodels.db'}").customer_numbers()[0])
    (home / "dagster_home").mkdir(exist_ok=True)
    (home / "dagster_home" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    runs = []
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", ONE_PARTITION, str(home / "dagster_home"), customer,
                              str(home / "logs" / "bench.log")], env=env, check=True, capture_output=True, text=True)
        run_s, process_s = map(float, out.stdout.split())
        runs.append({"run_s": run_s, "process_s": process_s})
    return {"partition": customer, "runs": runs}


def demo(home: Path, runs: int = 5) -> dict:
    """`recsys-platform demo` from a fresh home, `runs` times, as a whole process (what a person
    waits for): each run's wall time, its own timer's total and step times, and the medians; what
    lies outside the demo's timer (the interpreter, imports, the Dagster instance and the
    definitions, the exit) is their difference."""
    env = {**os.environ}
    for var in ("RECSYS_SOURCE_URL", "RECSYS_ENGINE", "RECSYS_HASH_BUCKETS", "RECSYS_VECTOR_DSN"):
        env.pop(var, None)
    walls, summaries = [], []
    for n in range(runs):
        env["RECSYS_HOME"] = str(home / f"run{n}")
        start = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "recsys_platform.cli", "demo"], env=env, capture_output=True, text=True)
        walls.append(time.perf_counter() - start)
        subprocess.run([sys.executable, "-m", "recsys_platform.cli", "stop"], env=env, capture_output=True)
        if out.returncode:
            raise RuntimeError(f"demo failed: {out.stderr[-2000:]}")
        summaries.append([line for line in out.stdout.splitlines() if line.startswith(("done in", "✓"))])
    timed = [float(line.split()[2]) for summary in summaries for line in summary if line.startswith("done in")]
    median = sorted(walls)[len(walls) // 2]
    return {"wall_s": median, "walls_s": walls, "steps": summaries, "timer_s": sorted(timed)[len(timed) // 2],
            "outside_timer_s": median - sorted(timed)[len(timed) // 2]}


# -- the run ----------------------------------------------------------------------------------------
def measure_scale(url: str, scale: float, buckets: int, session, work: Path,
                  layouts: tuple[str, ...] = ("per_customer", "buckets")) -> dict:
    db = SourceDatabase(url)
    rows = db.count_ratings()
    customers = db.customer_numbers()
    out: dict = {"scale": scale, "rows": rows, "customers": len(customers), "layouts": {}}
    out["floor_source_s"] = src = min(floor_source(url) for _ in range(2))
    table = joined_arrow(url)
    assert table.num_rows == rows
    chosen = [Layout(0)] * ("per_customer" in layouts) + [Layout(buckets)] * ("buckets" in layouts)
    for layout in chosen:
        name = "per_customer" if not layout.buckets else f"hash_buckets_{layout.buckets}"
        keys = layout.partition_keys(customers)
        entry: dict = {"partitions": len(keys)}
        target = work / f"floor-{name}"
        entry["floor_write_s"] = floor_write(table, layout, str(target))
        shutil.rmtree(target, ignore_errors=True)
        entry["floor_serial_s"] = src + entry["floor_write_s"]
        _, entry["naive_s"], peak, kinds = in_child(_naive, url, layout.buckets, str(work / "naive"))
        entry["naive_peak_rss_mb"] = round(peak / 2**20, 1)
        entry["naive_memory_mb"] = {k: round(v / 2**20, 1) for k, v in kinds.items()}
        shutil.rmtree(work / "naive", ignore_errors=True)
        n, entry["arrow_s"], peak, kinds = in_child(_arrow_engine, url, layout.buckets, str(work / "arrow"))
        assert n == rows, (n, rows)
        entry["arrow_peak_rss_mb"] = round(peak / 2**20, 1)
        entry["arrow_memory_mb"] = {k: round(v / 2**20, 1) for k, v in kinds.items()}
        shutil.rmtree(work / "arrow", ignore_errors=True)
        store = ObjectStore.from_url((work / "spark").as_uri())
        start = time.perf_counter()
        result = spark.build(session, db, store, keys, layout=layout, use_jdbc=True, num_partitions=4,
                             log=lambda *_: None)
        entry["spark_jdbc_s"] = time.perf_counter() - start
        entry["spark_jdbc_steps"] = result.timings
        assert result.rows == rows
        shutil.rmtree(work / "spark", ignore_errors=True)
        entry["rows_per_s"] = {k: rows / entry[f"{k}_s"] for k in
                               ("floor_serial", "floor_write", "naive", "arrow", "spark_jdbc")}
        entry["rows_per_s"]["floor_source"] = rows / src
        entry["ratios"] = {
            "arrow_time_vs_floor_serial": entry["arrow_s"] / entry["floor_serial_s"],
            "arrow_speedup_vs_naive": entry["naive_s"] / entry["arrow_s"],
            "spark_jdbc_time_vs_floor_serial": entry["spark_jdbc_s"] / entry["floor_serial_s"],
            "spark_jdbc_speedup_vs_naive": entry["naive_s"] / entry["spark_jdbc_s"],
            "arrow_peak_rss_vs_naive": entry["arrow_peak_rss_mb"] / entry["naive_peak_rss_mb"],
        }
        out["layouts"][name] = entry
    del table
    return out


def print_table(results: dict) -> None:
    print("\nrows/s (higher is better); time ratio = engine time / floor_serial time (goal arrow <= 1.5; spark <= 2 "
          "at scale 1000 with buckets); speedup = naive time / engine time (goal arrow >= 2)")
    print(f"{'scale':>6} {'layout':<17} {'floor serial':>12} {'naive':>9} {'spark JDBC':>10} {'arrow':>9} "
          f"{'arrow/floor':>11} {'spark/floor':>11} {'naive/arrow':>11} {'arrow MB':>8} {'naive MB':>8}")
    for run in results["scales"]:
        for name, e in run["layouts"].items():
            r, q = e["rows_per_s"], e["ratios"]
            print(f"{run['scale']:>6g} {name:<17} {r['floor_serial']:>12,.0f} {r['naive']:>9,.0f} {r['spark_jdbc']:>10,.0f} "
                  f"{r['arrow']:>9,.0f} {q['arrow_time_vs_floor_serial']:>11.2f} {q['spark_jdbc_time_vs_floor_serial']:>11.2f} "
                  f"{q['arrow_speedup_vs_naive']:>11.2f} {e['arrow_peak_rss_mb']:>8.0f} {e['naive_peak_rss_mb']:>8.0f}")
    print("\nresident memory by kind, MB (anonymous: heap and Arrow buffers; file: libraries and mapped "
          "files, pages the kernel can drop): after imports -> peak")
    for run in results["scales"]:
        for name, e in run["layouts"].items():
            for method in ("arrow", "naive"):
                m = e.get(f"{method}_memory_mb")
                if m:
                    print(f"{run['scale']:>6g} {name:<17} {method:<6} anonymous {m['baseline_anon']:>6.0f} -> "
                          f"{m['peak_anon']:>6.0f}   file {m['baseline_file']:>5.0f} -> {m['peak_file']:>5.0f}   "
                          f"max RSS {e[f'{method}_peak_rss_mb']:>6.0f}")
    one = results.get("dagster_one_partition")
    if one:
        print(f"one partition through Dagster in-process (fresh process): run {one['runs'][-1]['run_s']:.2f} s, "
              f"process {one['runs'][-1]['process_s']:.2f} s (goal: under 3 s)")
    if results.get("demo"):
        d = results["demo"]
        print(f"recsys-platform demo at scale 1 from a fresh home, whole process: median {d['wall_s']:.1f} s of "
              f"{', '.join(f'{w:.1f}' for w in d['walls_s'])} (goal: under 15 s); its own timer "
              f"{d['timer_s']:.1f} s, outside it {d['outside_timer_s']:.1f} s (interpreter, imports, instance, exit)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", type=float, nargs="+", default=[100])
    parser.add_argument("--buckets", type=int, default=64, help="hash buckets for the bucket layout")
    parser.add_argument("--source-url", default=os.environ.get("RECSYS_TEST_MYSQL_URL", ""))
    parser.add_argument("--jar", default=os.environ.get("RECSYS_TEST_JDBC_JAR", "/usr/share/java/mariadb-java-client.jar"))
    parser.add_argument("--skip-demo", action="store_true", help="skip the Dagster one-partition and demo timings")
    parser.add_argument("--layouts", nargs="+", choices=("per_customer", "buckets"), default=["per_customer", "buckets"],
                        help="per_customer at scale 1000 creates 122,000 folders per method (hours on a slow disk)")
    args = parser.parse_args()
    if not args.source_url:
        parser.error("no MariaDB: start scripts/services.sh and source .services/env, or pass --source-url")

    results: dict = {"columns": COLUMN_NAMES, "scales": []}
    work = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    from pyspark.sql import SparkSession

    start = time.perf_counter()
    local_workers_run_this_interpreter()
    builder = SparkSession.builder
    for k, v in spark_config("local[2]", jars=args.jar).items():
        builder = builder.config(k, v)
    session = builder.getOrCreate()
    results["spark_start_s"] = time.perf_counter() - start
    try:
        for scale in args.scales:
            url = ensure_source(args.source_url, scale)
            results["scales"].append(measure_scale(url, scale, args.buckets, session, work, tuple(args.layouts)))
            print_table({"scales": results["scales"][-1:]})
    finally:
        session.stop()
    if not args.skip_demo:
        results["dagster_one_partition"] = dagster_one_partition(work / "one")
        results["demo"] = demo(work / "demo")
    shutil.rmtree(work, ignore_errors=True)
    print_table(results)
    print(f"results: {write_results('batch', results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
