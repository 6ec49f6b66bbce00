"""Streaming benchmark on the embedded default: events/s through delivery, against the lab's
one-HTTP-round-trip-per-record path, produced-to-written latency at 1-second buffering, the
inference HTTP app (FastAPI on uvicorn) against the stdlib server it replaced
(benchmarks/baselines/stdlib_http.py): requests/s and p99 with 50 concurrent clients, and how many
of 200 simultaneous clients get an answer; and cold starts: a new Lambda container's import, first
batch and warm batch, for the platform's transformation handler, the handler as it was before
the lean serving path (benchmarks/baselines/training_library_serving.py) and the floor (numpy and
psycopg alone: load the weights, embed, one query), each in fresh processes.

    python benchmarks/streaming.py --events 20000 --baseline-events 500 --rate 1000 --seconds 10
    python benchmarks/streaming.py --cold-starts 7 --only-cold-starts      # the cold-start table alone
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks.baselines import stdlib_http  # noqa: E402
from benchmarks.common import write_results  # noqa: E402
from recsys_platform import wiring  # noqa: E402
from recsys_platform.batch.seed import generate, training_table  # noqa: E402
from recsys_platform.ml import artifacts  # noqa: E402
from recsys_platform.ml.hybrid import HybridSettings  # noqa: E402
from recsys_platform.ml.spec import RETAIL  # noqa: E402
from recsys_platform.ml.training import train_recommender  # noqa: E402
from recsys_platform.serving.http import serving  # noqa: E402
from recsys_platform.serving.service import InferenceService, ModelCache  # noqa: E402
from recsys_platform.storage.object_store import ObjectStore  # noqa: E402
from recsys_platform.streaming.delivery import BufferHints, DeliveryRuntime  # noqa: E402
from recsys_platform.streaming.producer import sessions  # noqa: E402
from recsys_platform.streaming.stream import LocalStream  # noqa: E402
from recsys_platform.vectors.catalog import items_from_products, load_catalog  # noqa: E402
from recsys_platform.vectors.embedded import embedded_dsn, stop_embedded  # noqa: E402
from recsys_platform.vectors.store import VectorStore  # noqa: E402


def setup(home: Path) -> tuple[InferenceService, tuple[list[dict], list[str]]]:
    frame = training_table(1)
    run = train_recommender(frame, RETAIL, HybridSettings(), l2_grid=None)
    s = run.model.spec
    store = ObjectStore.from_url((home / "ml-artifacts").as_uri())
    published = artifacts.publish(store, run.model, frame[s.user_columns()].drop_duplicates(s.user_id),
                                  frame[s.item_columns()].drop_duplicates(s.item_id), run.metrics, "bench")
    vectors = VectorStore(embedded_dsn(home / "pgdata"))
    _, manifest, emb = artifacts.load_embeddings(store)
    vectors.load_version(published.version, emb["item"], emb["user"], manifest["dim"])
    vectors.activate(published.version)
    artifacts.set_current(store, published.version)
    load_catalog(vectors, items_from_products(frame.drop_duplicates("productCode").to_dict("records")),
                 zip(frame["customerNumber"], frame["productCode"]))
    service = InferenceService(ModelCache(store, vectors), vectors)
    data = generate(1)
    customers = [{k: c[k] for k in ("customerNumber", "city", "country", "creditLimit")} for c in data["customers"]]
    return service, (customers, sorted(p["productCode"] for p in data["products"]))


def throughput(home: Path, service: InferenceService, people, n: int) -> dict:
    stream = LocalStream(home / "stream-throughput", "activity")
    stream.put_records([(k, d) for k, d, _ in sessions(*people, n, 0.0, seed=11)])
    runtime = DeliveryRuntime(stream, wiring.in_process_transformation(service), ObjectStore.from_url((home / "recs-throughput").as_uri()),
                              home / "state-throughput", hints=BufferHints(records=500), log=lambda *_: None)
    start = time.perf_counter()
    counters = runtime.run(once=True)
    elapsed = time.perf_counter() - start
    assert counters.delivered == n, counters.summary()
    return {"events": n, "seconds": elapsed, "events_per_s": n / elapsed}


@contextmanager
def old_server(service: InferenceService):
    """The stdlib server the app replaced (the baseline), in a background thread."""
    server = stdlib_http.make_server(service, 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


SERVERS = {"app": serving, "stdlib_baseline": old_server}


def _call(base: str, method: str, path: str, body=None):
    req = urllib.request.Request(base + path, method=method, data=None if body is None else json.dumps(body).encode())
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def per_record_http(base: str, people, n: int) -> dict:
    """The lab's shape: for each record, HTTP calls to the inference API (embed, items, similar)."""
    events = [json.loads(d) for _, d, _ in sessions(*people, n, 0.0, seed=12)]
    start = time.perf_counter()
    for e in events:
        (vector,) = _call(base, "POST", "/user_embeddings",
                          [{"city": e["city"], "country": e["country"], "creditlimit": e["credit_limit"]}])
        _call(base, "POST", "/items_from_user?limit=5", vector)
        _call(base, "GET", f"/items_from_item?item_id={e['browse_history'][0]['product_code']}&limit=5")
    elapsed = time.perf_counter() - start
    return {"events": n, "seconds": elapsed, "events_per_s": n / elapsed, "round_trips_per_event": 3}


def concurrent_load(base: str, products: list[str], clients: int, requests: int) -> dict:
    """`requests` similar-item requests from `clients` threads at once: throughput, p99, errors."""
    def one(n: int):
        t = time.perf_counter()
        try:
            _call(base, "GET", f"/items_from_item?item_id={products[n % len(products)]}&limit=5")
            return time.perf_counter() - t, None
        except (urllib.error.URLError, ConnectionError, OSError) as e:
            return time.perf_counter() - t, type(e).__name__

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        outcomes = list(pool.map(one, range(requests)))
    elapsed = time.perf_counter() - start
    ok = np.array([t for t, err in outcomes if err is None])
    return {"clients": clients, "requests": requests, "answered": int(len(ok)), "errors": requests - int(len(ok)),
            "requests_per_s": len(ok) / elapsed, "p50_s": float(np.percentile(ok, 50)) if len(ok) else None,
            "p99_s": float(np.percentile(ok, 99)) if len(ok) else None}


def http_servers(service: InferenceService, people, baseline_events: int, requests: int) -> dict:
    """Each server in turn: the per-record path, 50 concurrent clients, 200 simultaneous clients."""
    out = {}
    for name, server in SERVERS.items():
        with server(service) as base:
            out[name] = {"per_record": per_record_http(base, people, baseline_events),
                         "clients_50": concurrent_load(base, people[1], 50, requests),
                         "clients_200": concurrent_load(base, people[1], 200, 200)}
    return out


def latency(home: Path, service: InferenceService, people, rate: float, seconds: float) -> dict:
    stream = LocalStream(home / "stream-latency", "activity")
    runtime = DeliveryRuntime(stream, wiring.in_process_transformation(service), ObjectStore.from_url((home / "recs-latency").as_uri()),
                              home / "state-latency", hints=BufferHints(records=100_000, seconds=1.0), log=lambda *_: None)
    total = int(rate * seconds)
    records = [(k, d) for k, d, _ in sessions(*people, total, 0.0, seed=13)]

    def produce():
        start = time.monotonic()
        for i in range(0, total, max(1, int(rate / 20))):
            stream.put_records(records[i:i + max(1, int(rate / 20))])
            time.sleep(max(0.0, (i + rate / 20) / rate - (time.monotonic() - start)))

    producer = threading.Thread(target=produce)
    producer.start()
    runtime.run(max_seconds=seconds + 3)
    producer.join()
    lat = np.array(runtime.counters.latencies_s)
    return {"rate": rate, "events": int(len(lat)), "buffer_seconds": 1.0, "p50_s": float(np.percentile(lat, 50)),
            "p99_s": float(np.percentile(lat, 99)), "max_s": float(lat.max())}


# -- cold starts: what a new Lambda container pays ----------------------------------------------
COLD_PROBE = """
import base64, json, sys, time
start = time.perf_counter()
{imports}
imported = time.perf_counter()
event = json.load(open(sys.argv[1]))
first_start = time.perf_counter()
out = handle(event)
first = time.perf_counter() - first_start
warm = []
for _ in range(20):
    t = time.perf_counter()
    handle(event)
    warm.append(time.perf_counter() - t)
warm.sort()
print(json.dumps({{"import_s": imported - start, "first_batch_s": first, "warm_batch_s": warm[len(warm) // 2],
                  "answered": {answered}}}))
"""
COLD_HANDLERS = {
    "platform": ("from lambdas.stream_transformation.handler import lambda_handler as handle",
                 'sum(r["result"] == "Ok" for r in out["records"])'),
    "before (training library)": ("from benchmarks.baselines.training_library_serving import lambda_handler as handle",
                                  'sum(r["result"] == "Ok" for r in out["records"])'),
    # The floor: numpy and psycopg alone doing serving's work: the weights read, each event's user
    # embedded by one product, one round trip for everyone's top 5 (the platform does more: features,
    # checks, similar items, the response).
    "floor (numpy + psycopg)": ("""import numpy as np, psycopg, os
def handle(event, state={}):
    if not state:
        state["w"] = np.load(os.environ["FLOOR_WEIGHTS"])["user_weights"]
        state["conn"] = psycopg.connect(os.environ["RECSYS_VECTOR_DSN"], autocommit=True)
    w = state["w"]
    users = np.ones((len(event["records"]), w.shape[0])) @ w
    vectors = ["[" + ",".join(f"{x:.6f}" for x in np.resize(u, 32)) + "]" for u in users]
    return state["conn"].execute(
        "SELECT q.o, r.id FROM unnest(%s::text[]) WITH ORDINALITY AS q(v, o) CROSS JOIN LATERAL ("
        "SELECT i.id FROM item_emb i ORDER BY i.embedding <#> q.v::vector LIMIT 5) r", (vectors,)).fetchall()""",
                                "len(out) // 5"),
}


def cold_starts(home: Path, service: InferenceService, people, runs: int, batch: int = 100) -> dict:
    """Each handler in `runs` fresh processes on one batch of `batch` events: medians of its
    import, its first batch (model load, database connection, answer) and a warm batch."""
    import base64
    import os
    import subprocess

    from recsys_platform.ml.artifacts import WEIGHTS, current_version

    event_path = home / "cold-start-event.json"
    events = [d for _, d, _ in sessions(*people, batch, 0.0, seed=14)]
    event_path.write_text(json.dumps({"records": [
        {"recordId": str(n), "approximateArrivalTimestamp": 0, "data": base64.b64encode(d).decode()}
        for n, d in enumerate(events)]}))
    store = service.models.store
    env = {**os.environ, "RECSYS_ARTIFACTS_URL": store.url, "RECSYS_VECTOR_DSN": service.vectors.dsn,
           "FLOOR_WEIGHTS": store.path(f"{current_version(store)}/{WEIGHTS}"),
           "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = {}
    for name, (imports, answered) in COLD_HANDLERS.items():
        probes = []
        for _ in range(runs):
            run = subprocess.run([sys.executable, "-c", COLD_PROBE.format(imports=imports, answered=answered),
                                  str(event_path)], env=env, capture_output=True, text=True, timeout=300, cwd="/")
            if run.returncode:
                raise RuntimeError(f"{name}: {run.stderr[-2000:]}")
            probes.append(json.loads(run.stdout.strip().splitlines()[-1]))
        median = {k: float(np.median([p[k] for p in probes])) for k in ("import_s", "first_batch_s", "warm_batch_s")}
        out[name] = {**median, "cold_start_s": median["import_s"] + median["first_batch_s"], "runs": runs,
                     "events": batch, "answered": probes[0]["answered"]}
    return out


def print_cold_starts(table: dict) -> None:
    floor = table["floor (numpy + psycopg)"]["cold_start_s"]
    print(f"\n{'cold start, ' + str(next(iter(table.values()))['events']) + ' events':<28}{'import':>9}"
          f"{'first batch':>13}{'cold start':>12}{'x floor':>9}{'warm batch':>12}")
    for name, r in table.items():
        print(f"{name:<28}{r['import_s']:>8.2f}s{r['first_batch_s']:>12.3f}s{r['cold_start_s']:>11.2f}s"
              f"{r['cold_start_s'] / floor:>8.1f}x{r['warm_batch_s'] * 1000:>10.1f}ms")
    print("(medians of fresh processes; goal: the platform's cold start within 2x the floor, warm batches "
          "no slower than before)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--baseline-events", type=int, default=500)
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--http-requests", type=int, default=2000, help="requests per concurrent-load run")
    parser.add_argument("--cold-starts", type=int, default=5, help="fresh processes per handler (median)")
    parser.add_argument("--only-cold-starts", action="store_true", help="measure the cold starts alone")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-streaming-"))
    try:
        service, people = setup(home)
        cold = cold_starts(home, service, people, args.cold_starts)
        if args.only_cold_starts:
            print_cold_starts(cold)
            print(f"results: {write_results('streaming_cold_starts', {'cold_starts': cold})}")
            return 0
        fast = throughput(home, service, people, args.events)
        servers = http_servers(service, people, args.baseline_events, args.http_requests)
        lat = latency(home, service, people, args.rate, args.seconds)
    finally:
        stop_embedded(home / "pgdata")
    slow = servers["app"]["per_record"]
    results = {"delivery": fast, "per_record_http": slow, "speedup": fast["events_per_s"] / slow["events_per_s"],
               "latency": lat, "http": servers, "cold_starts": cold}
    print(f"delivery {fast['events_per_s']:,.0f} events/s; per-record HTTP {slow['events_per_s']:,.0f} events/s "
          f"({results['speedup']:.1f}x); latency at {args.rate:g} events/s with 1 s buffering: "
          f"p50 {lat['p50_s']:.2f}s p99 {lat['p99_s']:.2f}s")
    print(f"\n{'inference HTTP':<34}{'app (FastAPI/uvicorn)':>24}{'stdlib server (before)':>24}")
    rows = [("per-record path, events/s", lambda r: f"{r['per_record']['events_per_s']:,.0f}"),
            ("50 clients: requests/s", lambda r: f"{r['clients_50']['requests_per_s']:,.0f}"),
            ("50 clients: p99", lambda r: "-" if r["clients_50"]["p99_s"] is None
             else f"{r['clients_50']['p99_s'] * 1000:,.0f} ms"),
            ("50 clients: failed requests", lambda r: f"{r['clients_50']['errors']}/{r['clients_50']['requests']}"),
            ("200 at once: failed requests", lambda r: f"{r['clients_200']['errors']}/{r['clients_200']['requests']}")]
    for label, cell in rows:
        print(f"{label:<34}{cell(servers['app']):>24}{cell(servers['stdlib_baseline']):>24}")
    print_cold_starts(cold)
    print(f"results: {write_results('streaming', results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
