"""What the stream taught: interactions as training rows beside the explicit ratings.

Each (customer, product) pair of the window's interactions becomes one row of the training
table's columns that the spec reads, with an implied rating by its strongest kind (a cart a 5,
a browse a 3 by default: `FeedbackWeights`). The rows join the *training* split only (`ml.training`): validation
and test stay the explicit ratings, so the blocking checks judge the model on what customers
rated. A product's features come from the ratings table (a product no one rated has no
features: left out, counted); a customer's from the ratings table when it is known there, else
from its events (a customer seen only in the stream: embedded, with its own id, by this training;
without features in any event: left out, counted). Sessions held out for replay
(`feedback.replay.held_out`) are never training rows, nor are the events of a customer deleted
from the source.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from dataclasses import dataclass

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from recsys_platform.feedback.interactions import BROWSE, CART, DATASET, read_window
from recsys_platform.feedback.replay import held_out_mask
from recsys_platform.ml.spec import RecommenderSpec
from recsys_platform.serving.service import USER_FEATURE_COLUMNS
from recsys_platform.storage import lake
from recsys_platform.storage.object_store import ObjectStore
from recsys_platform.streaming.recommendations import COLUMN, hour_of


@dataclass(frozen=True)
class FeedbackWeights:
    """The implied rating of each kind of interaction (the strongest of a pair's kinds counts)."""

    cart: float = 5.0
    browse: float = 3.0

    def of(self, kind: str) -> float:
        return {CART: self.cart, BROWSE: self.browse}[kind]


@dataclass(frozen=True)
class ImpliedRatings:
    rows: pd.DataFrame  # the spec's columns of the training table, one row per (customer, product)
    interactions: int  # read from the window
    unknown_products: int  # pairs left out: a product no rating describes
    featureless_customers: int  # customers left out: unknown to the ratings, no features in any event
    stream_only_customers: int  # customers in `rows` the ratings do not hold


def window_hours(store: ObjectStore, now: dt.datetime, hours: int) -> list[str]:
    """The lake's interaction hours (`YYYY-MM-DD-HH`) within `hours` before `now` (0: none)."""
    if hours <= 0:
        return []
    start = now - dt.timedelta(hours=hours)
    return sorted(k for k in lake.list_partition_keys(store, DATASET, COLUMN) if hour_of(f"{k}:00") >= start)


def implied_ratings(interactions: pa.Table, ratings: pd.DataFrame, spec: RecommenderSpec,
                    weights: FeedbackWeights = FeedbackWeights()) -> ImpliedRatings:
    """The interactions as rows of `ratings`' columns (see the module's docstring)."""
    columns = [*spec.user_columns(), *spec.item_columns(), spec.rating]
    empty = ImpliedRatings(ratings[columns].iloc[:0], interactions.num_rows, 0, 0, 0)
    if not interactions.num_rows:
        return empty
    frame = interactions.select(["customer_number", "product_code", "kind", "city", "country", "credit_limit"]).to_pandas()
    frame["weight"] = frame["kind"].map(weights.of)
    pairs = (frame.groupby(["customer_number", "product_code"], as_index=False)["weight"].max()
             .rename(columns={"customer_number": spec.user_id, "product_code": spec.item_id, "weight": spec.rating}))
    items = ratings[spec.item_columns()].drop_duplicates(spec.item_id)
    known_users = ratings[spec.user_columns()].drop_duplicates(spec.user_id)
    # A stream-only customer's features: its last event that had them.
    city, country, credit = USER_FEATURE_COLUMNS
    featured = frame.dropna(subset=["city", "country", "credit_limit"]).drop_duplicates("customer_number", keep="last")
    stream_users = featured.rename(columns={"customer_number": spec.user_id, "city": city, "country": country,
                                            "credit_limit": credit})
    stream_users = stream_users[~stream_users[spec.user_id].isin(known_users[spec.user_id])]
    users = pd.concat([known_users, stream_users.reindex(columns=known_users.columns)], ignore_index=True)
    with_items = pairs.merge(items, on=spec.item_id)
    rows = with_items.merge(users, on=spec.user_id)
    return ImpliedRatings(
        rows[columns].astype(ratings[columns].dtypes.to_dict()), interactions.num_rows,
        unknown_products=len(pairs) - len(with_items),
        featureless_customers=with_items[spec.user_id].nunique() - rows[spec.user_id].nunique(),
        stream_only_customers=rows.loc[~rows[spec.user_id].isin(known_users[spec.user_id]), spec.user_id].nunique())


def window_ratings(store: ObjectStore, now: dt.datetime, hours: int, ratings: pd.DataFrame, spec: RecommenderSpec,
                   weights: FeedbackWeights = FeedbackWeights(),
                   held_out_share: float = 0.0,
                   deleted: Collection[int] = ()) -> tuple[ImpliedRatings, list[str]]:
    """The implied ratings of the lake's interactions within `hours` before `now`, and the hours
    read; but the sessions held out for replay (`feedback.replay.held_out`), and the customers
    `deleted` from the source (their events must not bring them back)."""
    keys = window_hours(store, now, hours)
    table = read_window(store, keys)
    if held_out_share:
        table = table.filter(pa.array(~held_out_mask(table, held_out_share)))
    if deleted:
        table = table.filter(pc.invert(pc.is_in(table.column("customer_number"), pa.array(sorted(deleted), pa.int64()))))
    return implied_ratings(table, ratings, spec, weights), keys
