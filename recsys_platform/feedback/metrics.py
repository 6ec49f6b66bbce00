"""Online metrics of an hour, per model version: did the recommendations served work?

From the hour's recommendations (the compacted records) and interactions (what customers did):
- hit rate at k: of the answers whose session has a later event in the hour (judged), the share
  whose top k holds a product carted in a later event of the session;
- attributed cart adds: carts whose event names (`recommendation_id`) an answer of the version,
  of this hour or the hour before, whose lists hold the carted product;
- served coverage: distinct products recommended over the version's catalog;
- latency p50/p99: from the stream receiving the event to the object holding its answer written;
- failure rate: the hour's failed records over its records (the same on each version's row:
  a failed record got no version).
A session that crosses the hour is judged on the part in the hour.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
import pyarrow as pa

from recsys_platform.feedback.interactions import CART

DATASET = "online_metrics"
K = 5
SCHEMA = pa.schema([
    ("model_version", pa.string()), ("recommendations", pa.int64()), ("judged", pa.int64()), ("hits", pa.int64()),
    ("hit_rate", pa.float64()), ("attributed_cart_adds", pa.int64()), ("cart_adds", pa.int64()),
    ("coverage", pa.float64()), ("latency_p50_s", pa.float64()), ("latency_p99_s", pa.float64()),
    ("records", pa.int64()), ("failed", pa.int64()), ("failure_rate", pa.float64()),
])


def _answers(recs: pa.Table, k: int) -> pd.DataFrame:
    """One row per answer: id, session, version, when the customer acted, top-k and every listed id."""
    frame = recs.select(["recommendation_id", "session_id", "model_version", "event_time", "arrived_at",
                         "processed_at", "recommended_items", "similar_items", "written_at"]).to_pandas()
    frame["t"] = frame["event_time"].fillna(frame["arrived_at"]).fillna(frame["processed_at"])
    frame["top"] = [[i["id"] for i in items[:k]] for items in frame["recommended_items"]]
    frame["listed"] = [[i["id"] for i in a] + [i["id"] for i in b]
                       for a, b in zip(frame["recommended_items"], frame["similar_items"])]
    return frame


def _pairs(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    """(recommendation_id, model_version, product_code) for each product in `column`'s lists."""
    out = frame[["recommendation_id", "model_version", column]].explode(column).dropna(subset=[column])
    return out.rename(columns={column: "product_code"}).drop_duplicates()


def hour_metrics(recs: pa.Table, interactions: pa.Table, failed: int, catalog_sizes: Mapping[str, int],
                 earlier_recs: pa.Table | None = None, k: int = K) -> pa.Table:
    """One row per model version that answered in the hour (SCHEMA)."""
    answers = _answers(recs, k)
    inter = interactions.select(["session_id", "event_time", "product_code", "kind", "recommendation_id",
                                 "acted_on_recommendation_id", "model_version"]).to_pandas()
    # Later events of each answer's session (not the answer's own event).
    later = answers[["recommendation_id", "session_id", "t"]].merge(
        inter[["session_id", "event_time", "product_code", "kind", "recommendation_id"]],
        on="session_id", suffixes=("", "_event"))
    later = later[(later["event_time"] > later["t"]) & (later["recommendation_id_event"] != later["recommendation_id"])]
    judged = set(later["recommendation_id"])
    carted = later.loc[later["kind"] == CART, ["recommendation_id", "product_code"]]
    hits = set(carted.merge(_pairs(answers, "top"), on=["recommendation_id", "product_code"])["recommendation_id"])
    # Attribution: a cart naming an answer (this hour's or the hour before's) that listed the product.
    listed = _pairs(answers, "listed")
    if earlier_recs is not None and earlier_recs.num_rows:
        listed = pd.concat([listed, _pairs(_answers(earlier_recs, k), "listed")])
    acted = inter[(inter["kind"] == CART) & inter["acted_on_recommendation_id"].notna()]
    attributed = acted.merge(listed, left_on=["acted_on_recommendation_id", "product_code"],
                             right_on=["recommendation_id", "product_code"], suffixes=("_event", ""))
    carts_by_version = inter[inter["kind"] == CART].groupby("model_version").size()
    attributed_by_version = attributed.groupby("model_version").size()
    records = len(answers) + failed
    rows = []
    for version, group in answers.groupby("model_version"):
        ids = set(group["recommendation_id"].dropna())
        served = {i for top in group["top"] for i in top}
        latency = (group["written_at"] - group["arrived_at"]).dt.total_seconds().dropna().to_numpy()
        n_judged, n_hits = len(ids & judged), len(ids & hits)
        rows.append({
            "model_version": version, "recommendations": len(group), "judged": n_judged, "hits": n_hits,
            "hit_rate": n_hits / n_judged if n_judged else None,
            "attributed_cart_adds": int(attributed_by_version.get(version, 0)),
            "cart_adds": int(carts_by_version.get(version, 0)),
            "coverage": len(served) / catalog_sizes[version] if catalog_sizes.get(version) else None,
            "latency_p50_s": float(np.percentile(latency, 50)) if len(latency) else None,
            "latency_p99_s": float(np.percentile(latency, 99)) if len(latency) else None,
            "records": records, "failed": failed, "failure_rate": failed / records if records else 0.0})
    return pa.Table.from_pylist(rows, schema=SCHEMA)


def version_comparison(history: pd.DataFrame, min_judged: int) -> tuple[str, str, float, float] | None:
    """The newest version's hit rate against the version before it, each over every hour of
    `history` (rows of SCHEMA) with its judged answers summed: (new, previous, new rate,
    previous rate), or None when there is no previous version or either has fewer than
    `min_judged` judged answers."""
    totals = history.groupby("model_version")[["judged", "hits"]].sum().sort_index()
    if len(totals) < 2:
        return None
    (prev, p), (new, n) = list(totals.iloc[-2:].iterrows())
    if n["judged"] < min_judged or p["judged"] < min_judged:
        return None
    return str(new), str(prev), float(n["hits"] / n["judged"]), float(p["hits"] / p["judged"])
