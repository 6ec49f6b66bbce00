"""Champion and challenger: replay two published models on the same recent real events.

A *moment* is an event whose session carts something in a later event: what a model would have
recommended for it (the customer embedded as serving embeds it, the event's products left out,
the top k by inner product) is a hit when it holds a product carted later. Both models answer
the same moments, so their hit rates compare directly.

The moments come from held-out sessions: a fixed share of sessions, chosen by a hash of the
session id, that no training ever reads (`feedback.training` leaves them out). So neither the
challenger nor the champion it is compared with has seen the carts it is judged on, and the share
held out is the same whichever model trained when. Business rules (stock, lines, prices) are not
applied: both models are judged on their ranking alone.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa

from recsys_platform.feedback.interactions import CART, read_window
from recsys_platform.ml import artifacts
from recsys_platform.ml.published import PublishedModel, canonical_id
from recsys_platform.serving.service import USER_FEATURE_COLUMNS


def held_out(session_id: str, share: float) -> bool:
    """Whether a session is kept from every training for replay (the same answer every time)."""
    return int(hashlib.sha1(session_id.encode()).hexdigest()[:8], 16) < share * 2 ** 32


def held_out_mask(interactions: pa.Table, share: float) -> np.ndarray:
    return np.array([held_out(s, share) for s in interactions.column("session_id").to_pylist()], dtype=bool)


def moments(interactions: pa.Table) -> pd.DataFrame:
    """One row per event with carts later in its session: the customer and its features, the
    event's products (never recommended) and the products carted later."""
    if not interactions.num_rows:
        return pd.DataFrame(columns=["customer_number", "city", "country", "credit_limit", "seen", "later_carts"])
    frame = interactions.select(["interaction_id", "customer_number", "product_code", "kind", "session_id",
                                 "event_time", "city", "country", "credit_limit"]).to_pandas()
    frame["event"] = frame["interaction_id"].str.split(":").str[0]
    events = (frame.groupby("event", sort=False)
              .agg(session_id=("session_id", "first"), t=("event_time", "first"), customer_number=("customer_number", "first"),
                   city=("city", "first"), country=("country", "first"), credit_limit=("credit_limit", "first"),
                   seen=("product_code", lambda p: sorted(set(p))),
                   carts=("product_code", lambda p: set(p[frame.loc[p.index, "kind"] == CART])))
              .sort_values(["session_id", "t"]))
    rows = []
    for _, session in events.groupby("session_id", sort=False):
        session = session.to_dict("records")
        for n, event in enumerate(session):
            later = set().union(*(e["carts"] for e in session[n + 1:] if e["t"] > event["t"])) if n + 1 < len(session) \
                else set()
            if later:
                rows.append({**{k: event[k] for k in ("customer_number", "city", "country", "credit_limit", "seen")},
                             "later_carts": sorted(later)})
    return pd.DataFrame(rows, columns=["customer_number", "city", "country", "credit_limit", "seen", "later_carts"])


@dataclass(frozen=True)
class Replay:
    version: str
    judged: int  # moments the model could answer (a customer it can embed)
    hits: int

    @property
    def hit_rate(self) -> float | None:
        return self.hits / self.judged if self.judged else None


def replay(store, version: str, moments_: pd.DataFrame, k: int) -> Replay:
    """`version`'s hit rate at k on the moments (a moment without features is answered from the
    version's own vector of that customer, as serving looks it up; without either, it is skipped)."""
    model = PublishedModel.load(store, version)
    _, _, emb = artifacts.load_embeddings(store, version)
    item_ids, items = emb["item"]
    user_index = {u: n for n, u in enumerate(emb["user"][0])}
    spec, (city, country, credit) = model.spec, USER_FEATURE_COLUMNS
    featured = moments_.dropna(subset=["city", "country", "credit_limit"])
    vectors = {}
    if len(featured):
        embedded = model.user_embeddings([{spec.user_id: int(r.customer_number), city: r.city, country: r.country,
                                           credit: float(r.credit_limit)} for r in featured.itertuples()])
        vectors = dict(zip(featured.index, embedded))
    for i, r in moments_.drop(featured.index).iterrows():
        n = user_index.get(canonical_id(r["customer_number"]))
        if n is not None:
            vectors[i] = emb["user"][1][n]
    if not vectors:
        return Replay(version, 0, 0)
    order = list(vectors)
    scores = np.vstack([vectors[i] for i in order]).astype(np.float64) @ items.astype(np.float64).T
    position = {p: n for n, p in enumerate(item_ids)}
    hits = 0
    for row, i in zip(scores, order):
        for p in moments_.at[i, "seen"]:
            if p in position:
                row[position[p]] = -np.inf
        top = {item_ids[j] for j in np.argsort(-row)[:k]}
        hits += bool(top & set(moments_.at[i, "later_carts"]))
    return Replay(version, len(order), hits)


def verdict(challenger: Replay, champion: Replay | None, min_judged: int, margin: float) -> tuple[bool, str]:
    """Whether the challenger may serve, and why: it may unless it is worse than the champion by
    more than `margin` on at least `min_judged` moments each (too few to judge: it may, and says so)."""
    if champion is None:
        return True, f"no model serves yet: {challenger.version} goes first"
    judged = min(challenger.judged, champion.judged)
    if judged < min_judged:
        return True, (f"too few held-out events to judge ({judged} answered by both, {min_judged} needed): "
                      f"{challenger.version} goes through")
    a, b = challenger.hit_rate, champion.hit_rate
    passed = a >= b - margin
    return passed, (f"replayed on {challenger.judged} held-out events: hit rate {a:.3f} against the serving "
                    f"{champion.version}'s {b:.3f} (margin {margin})"
                    + ("" if passed else f": {champion.version} keeps serving"))


def read_held_out(store, hours: list[str], share: float) -> pa.Table:
    """The interactions of the held-out sessions of these hours (`YYYY-MM-DD-HH`)."""
    table = read_window(store, hours)
    return table.filter(pa.array(held_out_mask(table, share))) if share else table.slice(0, 0)
