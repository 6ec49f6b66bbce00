"""Feedback-loop benchmark: does learning from what was served pay, and does retraining recover
from a taste shift? On the collaborative seed at each scale, with learnable sessions (several
timed events each, carts following the customers' latent tastes; a fifth of the sessions from
customers the source does not hold), one stream is split in time:

- earlier hours: what the next training reads as interactions (`feedback.training`);
- later hours: what every method is judged on, with the champion/challenger replay's own code
  (`feedback.replay`): for each event whose session carts something later, is a product carted
  later in the method's top k (the event's products left out)?

Methods, side by side on the same moments: the model trained without interactions (ratings
only), with interactions (the asset's training), popularity (the most carted products of the
earlier hours) and random. With a taste shift: the model trained on sessions before it, judged on
later sessions before it and on sessions after it, and the model retrained once on the hours
that include the shift (what `retrain_sensor` starts), judged on the same sessions after it. Then the hour's feedback assets' code on an hour
of 10,000 delivered events: compaction, interactions, and the online metrics.

    python benchmarks/feedback.py                      # scale 10
    python benchmarks/feedback.py --scales 10 100

Goals (issue 25): with interactions above without; after the shift, retraining recovers at least
half of the hit rate lost; online metrics of an hour of 10,000 events in under 5 s.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import timer, write_results  # noqa: E402
from recsys_platform.assets.ml.assets import ModelConfig  # noqa: E402
from recsys_platform.batch.seed import generate, training_table  # noqa: E402
from recsys_platform.feedback import replay  # noqa: E402
from recsys_platform.feedback.interactions import CART, HourEvents, build_hour, to_table  # noqa: E402
from recsys_platform.feedback.metrics import hour_metrics  # noqa: E402
from recsys_platform.feedback.training import implied_ratings  # noqa: E402
from recsys_platform.ml import artifacts  # noqa: E402
from recsys_platform.ml.spec import RETAIL  # noqa: E402
from recsys_platform.storage.object_store import ObjectStore  # noqa: E402
from recsys_platform.streaming import firehose  # noqa: E402
from recsys_platform.streaming.events import parse_event  # noqa: E402
from recsys_platform.streaming.producer import SessionTastes, learnable_sessions  # noqa: E402
from recsys_platform.streaming.recommendations import compact_hour  # noqa: E402
from recsys_platform.streaming.records import answer_record  # noqa: E402

K = 5
SHIFT = 1.0  # how far tastes move (LatentTastes.shifted): 1, every customer's tastes drawn anew


def events_of(produced) -> list[dict]:
    return [json.loads(data) for _, data, _ in produced]


def interactions(events: list[dict]):
    """The interactions table of these events, as the asset builds it from an hour's records."""
    hour = HourEvents()
    for obj in events:
        hour.add(obj, parse_event(obj), None, None)
    return to_table(hour)


def train(frame, extra, store: ObjectStore) -> str:
    """The asset's training (default settings, L2 chosen on validation) and publication; the version."""
    spec = RETAIL
    implied = implied_ratings(extra, frame, spec) if extra is not None else None
    run = ModelConfig().train(frame, extra_train=None if implied is None else implied.rows, baselines=False)
    users = frame if implied is None else pd.concat([frame, implied.rows], ignore_index=True)
    published = artifacts.publish(store, run.model, users[spec.user_columns()].drop_duplicates(spec.user_id),
                                  frame[spec.item_columns()].drop_duplicates(spec.item_id), run.metrics, "bench")
    return published.version


def baseline_rate(moments, pick) -> float:
    hits = sum(bool(set(pick(set(m.seen))) & set(m.later_carts)) for m in moments.itertuples())
    return hits / len(moments) if len(moments) else float("nan")


def popularity_pick(earlier_events: list[dict]):
    carts = Counter(b["product_code"] for e in earlier_events for b in e["browse_history"] if b["in_shopping_cart"])
    ranked = [p for p, _ in carts.most_common()]
    return lambda seen: [p for p in ranked if p not in seen][:K]


def random_pick(products: list[str], seed: int = 0):
    rng = np.random.default_rng(seed)
    return lambda seen: list(rng.choice([p for p in products if p not in seen], K, replace=False))


def hit_rates(scale: float, sessions: int, later: int) -> dict:
    data = generate(scale, mode="collaborative")
    frame = training_table(scale, mode="collaborative")
    customers = [{k: c[k] for k in ("customerNumber", "city", "country", "creditLimit")} for c in data["customers"]]
    products = sorted(p["productCode"] for p in data["products"])
    tastes = SessionTastes.of_seed(scale, 42, customers, products)
    start = dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc)
    out: dict = {"scale": scale, "ratings": len(frame), "earlier_sessions": sessions, "later_sessions": later, "k": K}
    with tempfile.TemporaryDirectory() as tmp:
        store = ObjectStore.from_url(Path(tmp).as_uri())
        # One stream without a shift: earlier sessions train, later ones judge.
        stream = events_of(learnable_sessions(customers, tastes, sessions + later, start, seed=1))
        cut = f"sess-1-{sessions:08d}"
        earlier = [e for e in stream if e["session_id"] < cut]
        moments = replay.moments(interactions([e for e in stream if e["session_id"] >= cut]))
        out.update(earlier_events=len(earlier), judged_moments=len(moments))
        with timer(out, "train_without_s"):
            without = train(frame, None, store)
        with timer(out, "train_with_s"):
            with_ = train(frame, interactions(earlier), store)
        out["hit_rate"] = {
            "without_interactions": replay.replay(store, without, moments, K).hit_rate,
            "with_interactions": replay.replay(store, with_, moments, K).hit_rate,
            "popularity": baseline_rate(moments, popularity_pick(earlier)),
            "random": baseline_rate(moments, random_pick(products))}
        # A stream whose tastes shift: sessions A (trained on) and B (judged) before the shift, C
        # (trained on by the retraining) and D (judged) after it. The model of A is judged on B and
        # on D; retrained once on A and C (the asset's window holds both), it is judged on D again.
        total = 3 * sessions + later
        shifted = events_of(learnable_sessions(customers, tastes, total, start, shift=SHIFT,
                                               shift_at=2 * sessions / total, seed=2))

        def part(lo: int, hi: int) -> list[dict]:
            return [e for e in shifted if f"sess-2-{lo:08d}" <= e["session_id"] < f"sess-2-{hi:08d}"]

        a, b, c, d = part(0, sessions), part(sessions, 2 * sessions), part(2 * sessions, 3 * sessions), part(3 * sessions, total)
        old = train(frame, interactions(a), store)
        retrained = train(frame, interactions(a + c), store)
        b_moments, d_moments = replay.moments(interactions(b)), replay.moments(interactions(d))
        out["taste_shift"] = {
            "strength": SHIFT,
            "before_shift": replay.replay(store, old, b_moments, K).hit_rate,
            "after_shift_not_retrained": replay.replay(store, old, d_moments, K).hit_rate,
            "after_shift_retrained": replay.replay(store, retrained, d_moments, K).hit_rate,
            "popularity_after_shift": baseline_rate(d_moments, popularity_pick(a + c))}
        t = out["taste_shift"]
        lost = t["before_shift"] - t["after_shift_not_retrained"]
        t["recovered_share"] = (t["after_shift_retrained"] - t["after_shift_not_retrained"]) / lost if lost > 0 else None
        out["online_metrics"] = hour_of_events(store, with_, stream[:10_000])
    return out


def hour_of_events(artifacts_store: ObjectStore, version: str, events: list[dict]) -> dict:
    """An hour of delivered records for `events` (answered by `version`'s vectors, 500 per object,
    as Firehose would write them), then the hour's feedback code, timed step by step."""
    from recsys_platform.ml.published import PublishedModel

    model = PublishedModel.load(artifacts_store, version)
    _, _, emb = artifacts.load_embeddings(artifacts_store, version)
    ids, items = emb["item"]
    hour = dt.datetime.now(dt.timezone.utc).replace(minute=0, second=0, microsecond=0)
    with tempfile.TemporaryDirectory() as tmp:
        bucket, lake = (ObjectStore.from_url((Path(tmp) / name).as_uri()) for name in ("recs", "lake"))
        users = model.user_embeddings([{"customerNumber": e["customer_number"], "city": e["city"],
                                        "country": e["country"], "creditLimit": e["credit_limit"]} for e in events])
        top = np.argsort(-(users.astype(np.float64) @ items.astype(np.float64).T), axis=1)[:, :K + 3]
        for batch in range(0, len(events), 500):
            lines = []
            for n in range(batch, min(batch + 500, len(events))):
                shown = [ids[j] for j in top[n] if ids[j] not in {b["product_code"] for b in events[n]["browse_history"]}]
                answer = {"recommended_items": [{"id": i, "score": 1.0} for i in shown[:K]],
                          "similar_items": {"product_code": events[n]["browse_history"][0]["product_code"],
                                            "similar_items": []},
                          "model_version": version, "recommendation_id": f"r{n}",
                          "processed_at": (hour + dt.timedelta(seconds=1)).isoformat()}
                lines.append(json.dumps(answer_record(events[n], answer, hour)))
            bucket.write_bytes(firehose.object_key("bench", hour + dt.timedelta(seconds=batch // 500), f"b{batch}"),
                               ("\n".join(lines) + "\n").encode())
        out: dict = {"events": len(events)}
        with timer(out, "compaction_s"):
            compacted = compact_hour(bucket, lake, hour)
        with timer(out, "interactions_s"):
            built = build_hour(bucket, lake, hour)
        with timer(out, "online_metrics_s"):
            table = hour_metrics(compacted.table, built.table, compacted.failed, {version: len(ids)})
        row = table.to_pylist()[0]
        out.update(interactions=built.table.num_rows, judged=row["judged"], hit_rate=row["hit_rate"],
                   carts=sum(k == CART for k in built.table.column("kind").to_pylist()))
    return out


def print_run(r: dict) -> None:
    h, t, o = r["hit_rate"], r["taste_shift"], r["online_metrics"]
    print(f"\nscale {r['scale']:g}: {r['ratings']:,} ratings; {r['earlier_events']:,} earlier events train, "
          f"{r['judged_moments']:,} later events judged; hit rate at {r['k']}")
    print(f"  {'method':<28} {'hit rate':>8}")
    for name, value in h.items():
        print(f"  {name:<28} {value:8.3f}")
    goal = "met" if h["with_interactions"] > h["without_interactions"] else "NOT met"
    print(f"  goal with > without interactions: {goal}")
    print(f"  taste shift {t['strength']}: before {t['before_shift']:.3f}, after (not retrained) "
          f"{t['after_shift_not_retrained']:.3f}, after one retraining {t['after_shift_retrained']:.3f} "
          f"(popularity {t['popularity_after_shift']:.3f}); recovered "
          + ("n/a (nothing lost)" if t["recovered_share"] is None else f"{t['recovered_share']:.0%} of the loss "
             f"(goal 50%: {'met' if t['recovered_share'] >= 0.5 else 'NOT met'})"))
    total = o["compaction_s"] + o["interactions_s"] + o["online_metrics_s"]
    print(f"  an hour of {o['events']:,} events: compaction {o['compaction_s']:.2f} s, interactions "
          f"{o['interactions_s']:.2f} s, online metrics {o['online_metrics_s']:.2f} s (goal < 5 s: "
          f"{'met' if o['online_metrics_s'] < 5 else 'NOT met'}); all three {total:.2f} s; "
          f"its hit rate {o['hit_rate']:.3f} of {o['judged']:,} judged")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", type=float, nargs="+", default=[10])
    parser.add_argument("--sessions", type=int, default=3000, help="earlier sessions (training interactions)")
    parser.add_argument("--later", type=int, default=3000, help="later sessions (judged)")
    args = parser.parse_args()
    runs = []
    for scale in args.scales:
        started = time.perf_counter()
        runs.append(hit_rates(scale, args.sessions, args.later))
        runs[-1]["wall_s"] = time.perf_counter() - started
        print_run(runs[-1])
    path = write_results("feedback", {"runs": runs})
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
