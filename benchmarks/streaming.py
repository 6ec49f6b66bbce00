"""Streaming benchmark on the embedded default: events/s through delivery, against the lab's
one-HTTP-round-trip-per-record path, and produced-to-written latency at 1-second buffering.

    python benchmarks/streaming.py --events 20000 --baseline-events 500 --rate 1000 --seconds 10
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from benchmarks.common import write_results  # noqa: E402
from recsys_platform import wiring  # noqa: E402
from recsys_platform.batch.seed import generate, training_table  # noqa: E402
from recsys_platform.ml import artifacts  # noqa: E402
from recsys_platform.ml.evaluation import train_and_evaluate  # noqa: E402
from recsys_platform.ml.model import TwoTowerRecommender  # noqa: E402
from recsys_platform.storage.object_store import ObjectStore  # noqa: E402
from recsys_platform.streaming.delivery import BufferHints, DeliveryRuntime  # noqa: E402
from recsys_platform.streaming.http import make_server  # noqa: E402
from recsys_platform.streaming.inference import InferenceService, ModelCache  # noqa: E402
from recsys_platform.streaming.producer import sessions  # noqa: E402
from recsys_platform.streaming.stream import LocalStream  # noqa: E402
from recsys_platform.vectors.embedded import embedded_dsn, stop_embedded  # noqa: E402
from recsys_platform.vectors.store import VectorStore  # noqa: E402


def setup(home: Path) -> tuple[InferenceService, tuple[list[dict], list[str]]]:
    frame = training_table(1)
    run = train_and_evaluate(frame, TwoTowerRecommender())
    s = run.model.spec
    store = ObjectStore.from_url((home / "ml-artifacts").as_uri())
    published = artifacts.publish(store, run.model, frame[s.user_columns()].drop_duplicates(s.user_id),
                                  frame[s.item_columns()].drop_duplicates(s.item_id), run.metrics, "bench")
    vectors = VectorStore(embedded_dsn(home / "pgdata"))
    _, manifest, emb = artifacts.load_embeddings(store)
    vectors.load_version(published.version, emb["item"], emb["user"], manifest["dim"])
    vectors.activate(published.version)
    service = InferenceService(ModelCache(store), vectors)
    data = generate(1)
    customers = [{k: c[k] for k in ("customerNumber", "city", "country", "creditLimit")} for c in data["customers"]]
    return service, (customers, sorted(p["productCode"] for p in data["products"]))


def throughput(home: Path, service: InferenceService, people, n: int) -> dict:
    stream = LocalStream(home / "stream-throughput", "activity")
    stream.put_records([(k, d) for k, d, _ in sessions(*people, n, 0.0, seed=11)])
    runtime = DeliveryRuntime(stream, wiring.stream_transformation(service), ObjectStore.from_url((home / "recs-throughput").as_uri()),
                              home / "state-throughput", hints=BufferHints(records=500), log=lambda *_: None)
    start = time.perf_counter()
    counters = runtime.run(once=True)
    elapsed = time.perf_counter() - start
    assert counters.delivered == n, counters.summary()
    return {"events": n, "seconds": elapsed, "events_per_s": n / elapsed}


def per_record_http(service: InferenceService, people, n: int) -> dict:
    """The lab's shape: for each record, HTTP calls to the inference API (embed, items, similar)."""
    server = make_server(service, 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"

    def call(method, path, body=None):
        req = urllib.request.Request(base + path, method=method, data=None if body is None else json.dumps(body).encode())
        with urllib.request.urlopen(req, timeout=30) as resp:
            return json.loads(resp.read())

    events = [json.loads(d) for _, d, _ in sessions(*people, n, 0.0, seed=12)]
    start = time.perf_counter()
    for e in events:
        (vector,) = call("POST", "/user_embeddings", [{"city": e["city"], "country": e["country"], "creditlimit": e["credit_limit"]}])
        call("POST", "/items_from_user?limit=5", vector)
        call("GET", f"/items_from_item?item_id={e['browse_history'][0]['product_code']}&limit=5")
    elapsed = time.perf_counter() - start
    server.shutdown()
    server.server_close()
    return {"events": n, "seconds": elapsed, "events_per_s": n / elapsed, "round_trips_per_event": 3}


def latency(home: Path, service: InferenceService, people, rate: float, seconds: float) -> dict:
    stream = LocalStream(home / "stream-latency", "activity")
    runtime = DeliveryRuntime(stream, wiring.stream_transformation(service), ObjectStore.from_url((home / "recs-latency").as_uri()),
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
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-streaming-"))
    try:
        service, people = setup(home)
        fast = throughput(home, service, people, args.events)
        slow = per_record_http(service, people, args.baseline_events)
        lat = latency(home, service, people, args.rate, args.seconds)
    finally:
        stop_embedded(home / "pgdata")
    results = {"delivery": fast, "per_record_http": slow, "speedup": fast["events_per_s"] / slow["events_per_s"],
               "latency": lat}
    print(f"delivery {fast['events_per_s']:,.0f} events/s; per-record HTTP {slow['events_per_s']:,.0f} events/s "
          f"({results['speedup']:.1f}x); latency at {args.rate:g} events/s with 1 s buffering: "
          f"p50 {lat['p50_s']:.2f}s p99 {lat['p99_s']:.2f}s")
    print(f"results: {write_results('streaming', results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
