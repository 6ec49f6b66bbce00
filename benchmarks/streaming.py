"""Streaming benchmark on the embedded default: events/s through delivery, against the lab's
one-HTTP-round-trip-per-record path, produced-to-written latency at 1-second buffering, and the
inference HTTP app (FastAPI on uvicorn) against the stdlib server it replaced
(benchmarks/baselines/stdlib_http.py): requests/s and p99 with 50 concurrent clients, and how many
of 200 simultaneous clients get an answer.

    python benchmarks/streaming.py --events 20000 --baseline-events 500 --rate 1000 --seconds 10
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
from recsys_platform.ml.hybrid import HybridRecommender  # noqa: E402
from recsys_platform.ml.training import train_and_evaluate  # noqa: E402
from recsys_platform.serving.http import serving  # noqa: E402
from recsys_platform.serving.service import InferenceService, ModelCache  # noqa: E402
from recsys_platform.storage.object_store import ObjectStore  # noqa: E402
from recsys_platform.streaming.delivery import BufferHints, DeliveryRuntime  # noqa: E402
from recsys_platform.streaming.producer import sessions  # noqa: E402
from recsys_platform.streaming.stream import LocalStream  # noqa: E402
from recsys_platform.vectors.embedded import embedded_dsn, stop_embedded  # noqa: E402
from recsys_platform.vectors.store import VectorStore  # noqa: E402


def setup(home: Path) -> tuple[InferenceService, tuple[list[dict], list[str]]]:
    frame = training_table(1)
    run = train_and_evaluate(frame, HybridRecommender())
    s = run.model.spec
    store = ObjectStore.from_url((home / "ml-artifacts").as_uri())
    published = artifacts.publish(store, run.model, frame[s.user_columns()].drop_duplicates(s.user_id),
                                  frame[s.item_columns()].drop_duplicates(s.item_id), run.metrics, "bench")
    vectors = VectorStore(embedded_dsn(home / "pgdata"))
    _, manifest, emb = artifacts.load_embeddings(store)
    vectors.load_version(published.version, emb["item"], emb["user"], manifest["dim"])
    vectors.activate(published.version)
    artifacts.set_current(store, published.version)
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--baseline-events", type=int, default=500)
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--http-requests", type=int, default=2000, help="requests per concurrent-load run")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-streaming-"))
    try:
        service, people = setup(home)
        fast = throughput(home, service, people, args.events)
        servers = http_servers(service, people, args.baseline_events, args.http_requests)
        lat = latency(home, service, people, args.rate, args.seconds)
    finally:
        stop_embedded(home / "pgdata")
    slow = servers["app"]["per_record"]
    results = {"delivery": fast, "per_record_http": slow, "speedup": fast["events_per_s"] / slow["events_per_s"],
               "latency": lat, "http": servers}
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
    print(f"results: {write_results('streaming', results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
