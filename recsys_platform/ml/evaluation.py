"""Held-out evaluation of a recommender against baselines: RMSE, MAE, NDCG@10, Recall@10, coverage."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys_platform.ml.model import TwoTowerRecommender, TwoTowerSpec

RELEVANT_RATING = 4  # a held-out rating at or above this is a hit for ranking metrics
K = 10


def split(frame: pd.DataFrame, test_share: float = 0.2, seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A random held-out share of the ratings (seeded)."""
    if not 0 < test_share < 1:
        raise ValueError(f"test_share must be between 0 and 1, got {test_share}")
    mask = np.random.default_rng(seed).random(len(frame)) < test_share
    return frame[~mask].reset_index(drop=True), frame[mask].reset_index(drop=True)


@dataclass
class BiasBaseline:
    """global mean + regularised user bias + regularised item bias (the classic baseline)."""

    spec: TwoTowerSpec
    reg: float = 5.0

    def fit(self, train: pd.DataFrame) -> BiasBaseline:
        s = self.spec
        self.mu = float(train[s.rating].mean())
        r = train[s.rating] - self.mu
        self.bu = r.groupby(train[s.user_id]).sum() / (r.groupby(train[s.user_id]).count() + self.reg)
        r2 = r - train[s.user_id].map(self.bu)
        self.bi = r2.groupby(train[s.item_id]).sum() / (r2.groupby(train[s.item_id]).count() + self.reg)
        return self

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        s = self.spec
        return (self.mu + frame[s.user_id].map(self.bu).fillna(0) + frame[s.item_id].map(self.bi).fillna(0)).to_numpy()


def _rmse(y, p) -> float:
    return float(np.sqrt(np.mean((np.asarray(y) - np.asarray(p)) ** 2)))


def _mae(y, p) -> float:
    return float(np.mean(np.abs(np.asarray(y) - np.asarray(p))))


MAX_RANKED_USERS = 5_000  # ranking metrics on a seeded sample of users past this many
CHUNK = 1_000  # users scored at once: bounds memory to CHUNK x catalog floats


def _ranking(score_rows, n_users: int, seen: list[set[int]], relevant: list[set[int]],
             k: int = K) -> tuple[float, float, set[int]]:
    """Mean NDCG@k and Recall@k over users with a relevant held-out item, and the items shown.

    `score_rows(lo, hi)` returns the (hi - lo, catalog) scores of users lo..hi-1.
    """
    ndcgs, recalls, shown = [], [], set()
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    for lo in range(0, n_users, CHUNK):
        block = score_rows(lo, min(lo + CHUNK, n_users))
        for offset in range(block.shape[0]):
            _rank_one(block[offset].astype(float), lo + offset, seen, relevant, k, discounts, ndcgs, recalls, shown)
    return (float(np.mean(ndcgs)) if ndcgs else 0.0, float(np.mean(recalls)) if recalls else 0.0, shown)


def _rank_one(s: np.ndarray, u: int, seen, relevant, k, discounts, ndcgs, recalls, shown) -> None:
    """Top-k of one user's scores (items seen in training excluded), scored against relevance."""
    if seen[u]:
        s[list(seen[u])] = -np.inf
    top = np.argpartition(-s, min(k, len(s) - 1))[:k]
    top = top[np.argsort(-s[top])]
    shown.update(int(t) for t in top)
    if not relevant[u]:
        return
    gains = np.array([1.0 if t in relevant[u] else 0.0 for t in top])
    ideal = discounts[: min(k, len(relevant[u]))].sum()
    ndcgs.append(float(gains @ discounts[: len(gains)]) / ideal)
    recalls.append(gains.sum() / min(k, len(relevant[u])))


def _ranking_inputs(s: TwoTowerSpec, train: pd.DataFrame, test: pd.DataFrame, seed: int = 0):
    """Test users (a seeded sample past MAX_RANKED_USERS), the whole catalog (items seen in train
    or test), each user's items seen in training (never recommended) and relevant held-out items
    (rated >= RELEVANT_RATING)."""
    items = pd.concat([train, test])[s.item_columns()].drop_duplicates(s.item_id).reset_index(drop=True)
    users = test[s.user_columns()].drop_duplicates(s.user_id)
    if len(users) > MAX_RANKED_USERS:
        users = users.sample(MAX_RANKED_USERS, random_state=seed)
    users = users.reset_index(drop=True)
    test = test[test[s.user_id].isin(users[s.user_id])]
    item_pos = pd.Series(np.arange(len(items)), index=items[s.item_id])
    user_pos = pd.Series(np.arange(len(users)), index=users[s.user_id])
    seen = [set() for _ in range(len(users))]
    relevant = [set() for _ in range(len(users))]
    known = train[train[s.user_id].isin(user_pos.index)]
    for u, i in zip(known[s.user_id].map(user_pos), known[s.item_id].map(item_pos)):
        seen[u].add(int(i))
    hits = test[test[s.rating] >= RELEVANT_RATING]
    for u, i in zip(hits[s.user_id].map(user_pos), hits[s.item_id].map(item_pos)):
        relevant[u].add(int(i))
    return users, items, seen, relevant


POPULARITY_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)


def _model_rows(model: TwoTowerRecommender, users: pd.DataFrame, items: pd.DataFrame):
    item_vectors = model.item_embeddings(items).astype(np.float64)
    return lambda lo, hi: model.user_embeddings(users.iloc[lo:hi]).astype(np.float64) @ item_vectors.T


def choose_popularity_weight(model: TwoTowerRecommender, train: pd.DataFrame, valid: pd.DataFrame,
                             weights=POPULARITY_WEIGHTS) -> dict[float, float]:
    """Set `model.popularity_weight` to the weight with the best NDCG@10 on `valid` (never the
    test split); returns NDCG@10 per weight tried."""
    users, items, seen, relevant = _ranking_inputs(model.spec, train, valid)
    tried = {}
    for w in weights:
        model.popularity_weight = w
        tried[w] = _ranking(_model_rows(model, users, items), len(users), seen, relevant)[0]
    model.popularity_weight = max(tried, key=lambda w: (tried[w], -w))
    return tried


def evaluate(model: TwoTowerRecommender, train: pd.DataFrame, test: pd.DataFrame) -> dict:
    """Metrics of `model` (trained on `train`) and of the baselines, on `test`."""
    s = model.spec
    y = test[s.rating].astype(float).to_numpy()
    bias = BiasBaseline(s).fit(train)
    mean = float(train[s.rating].mean())
    metrics = {
        "rmse": _rmse(y, model.predict(test)), "mae": _mae(y, model.predict(test)),
        "rmse_global_mean": _rmse(y, np.full_like(y, mean)), "mae_global_mean": _mae(y, np.full_like(y, mean)),
        "rmse_bias": _rmse(y, bias.predict(test)), "mae_bias": _mae(y, bias.predict(test)),
        "test_ratings": int(len(test)), "train_ratings": int(len(train)),
    }
    users, items, seen, relevant = _ranking_inputs(s, train, test)
    ndcg, recall, shown = _ranking(_model_rows(model, users, items), len(users), seen, relevant)
    popularity = train[s.item_id].value_counts().reindex(items[s.item_id]).fillna(0).to_numpy(dtype=float)
    p_ndcg, p_recall, p_shown = _ranking(lambda lo, hi: np.tile(popularity, (hi - lo, 1)), len(users), seen, relevant)
    metrics.update({
        f"ndcg@{K}": ndcg, f"recall@{K}": recall, "coverage": len(shown) / len(items),
        f"ndcg@{K}_popularity": p_ndcg, f"recall@{K}_popularity": p_recall,
        "coverage_popularity": len(p_shown) / len(items),
        "users_ranked": int(sum(1 for r in relevant if r)), "catalog_items": int(len(items)),
    })
    return metrics


@dataclass
class TrainingRun:
    model: TwoTowerRecommender
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    metrics: dict
    popularity_ndcg_by_weight: dict[float, float]


def train_and_evaluate(frame: pd.DataFrame, model: TwoTowerRecommender, test_share: float = 0.2,
                       valid_share: float = 0.1, seed: int = 0) -> TrainingRun:
    """Split train/valid/test, fit on train, choose the popularity prior on valid, score on test."""
    rest, test = split(frame, test_share, seed)
    train, valid = split(rest, valid_share / (1 - test_share), seed + 1)
    model.fit(train)
    tried = choose_popularity_weight(model, train, valid)
    metrics = evaluate(model, train, test)
    metrics["popularity_weight"] = model.popularity_weight
    return TrainingRun(model, train, valid, test, metrics, tried)
