"""Held-out evaluation of a recommender against baselines: RMSE, MAE, NDCG@10, Recall@10, coverage.

The ranking metrics rank every test user's candidates (the catalog less the items the user has in
training or validation) the same way for the model and every baseline (`RankingInputs.rank`); the
baselines are the global mean, user/item biases, popularity and implicit ALS tuned on the
validation split (`tune_als`, over a wide grid) and EASE, the item-item closed form (`tune_ease`).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd

from recsys_platform.ml.collaborative import CollaborativeSettings, als_factors
from recsys_platform.ml.encoding import training_rows
from recsys_platform.ml.hybrid import HybridRecommender
from recsys_platform.ml.spec import RecommenderSpec

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

    spec: RecommenderSpec
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


def rmse(y, p) -> float:
    return float(np.sqrt(np.mean((np.asarray(y) - np.asarray(p)) ** 2)))


def mae(y, p) -> float:
    return float(np.mean(np.abs(np.asarray(y) - np.asarray(p))))


MAX_RANKED_USERS = 5_000  # ranking metrics on a seeded sample of users past this many
CHUNK = 1_000  # users scored at once: bounds memory to CHUNK x catalog floats
# ... and at most this many scores: each block is a fresh array and argpartition makes an index
# per score, so a block's cost is mostly first touches of new memory. At 110,000 items, 5,000
# users ranked in 7.8 s in blocks of 1,000 and in 3.5 s in blocks of 150 (measured here).
BLOCK_SCORES = 1 << 24


@dataclass
class Ranking:
    """Mean ranking metrics over users with a relevant held-out item, and the items shown."""

    ndcg: float
    recall: float         # hits / relevant items (the standard definition)
    recall_capped: float  # hits / min(k, relevant items): 1.0 is reachable whatever the user has
    shown: set[int]


class _ItemSets(list):
    """Per-user item sets (a list of sets) that keep their CSR form once built (`_by_user`):
    a weight grid ranks the same users hundreds of times."""

    csr = None


def _by_user(sets: list[set[int]], n_items: int):
    """Per-user item sets as a boolean CSR matrix (users x items)."""
    import scipy.sparse as sp

    cached = getattr(sets, "csr", None)
    if cached is not None and cached.shape[1] == n_items:
        return cached
    lengths = np.fromiter((len(x) for x in sets), dtype=np.int64, count=len(sets))
    cols = np.fromiter((i for x in sets for i in x), dtype=np.int64, count=int(lengths.sum()))
    indptr = np.r_[0, np.cumsum(lengths)]
    matrix = sp.csr_matrix((np.ones(len(cols), dtype=bool), cols, indptr), shape=(len(sets), n_items))
    if isinstance(sets, _ItemSets):
        sets.csr = matrix
    return matrix


def rank_users(score_rows, n_users: int, seen: list[set[int]], relevant: list[set[int]], k: int = K) -> Ranking:
    """`score_rows(lo, hi)` returns the (hi - lo, catalog) scores of users lo..hi-1, as a new
    array that this overwrites (seen items become -inf). Each block of users is ranked at once:
    the k best per row, best first. Blocks hold up to CHUNK users and BLOCK_SCORES scores (the
    first, of at most 100 users, shows the catalog's size)."""
    ndcgs, recalls, capped, shown = [], [], [], set()
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.r_[0.0, np.cumsum(discounts)]  # the best DCG for 0..k relevant items
    seen_m = relevant_m = None
    lo, step = 0, min(CHUNK, 100)
    while lo < n_users:
        block = np.asarray(score_rows(lo, min(lo + step, n_users)), dtype=float)
        hi, width = lo + block.shape[0], block.shape[1]
        if seen_m is None:
            seen_m, relevant_m = _by_user(seen, width), _by_user(relevant, width)
        step = max(1, min(CHUNK, BLOCK_SCORES // max(width, 1)))
        part = seen_m[lo:hi].tocoo()
        block[part.row, part.col] = -np.inf
        n = min(k, width)
        top = np.argpartition(block, width - n, axis=1)[:, width - n:]  # the n largest, unordered
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(block, top, axis=1), axis=1, kind="stable"), axis=1)
        shown.update(np.unique(top).tolist())
        rel = relevant_m[lo:hi]
        lo = hi
        counts = np.diff(rel.indptr)
        users = np.flatnonzero(counts)
        if not len(users):
            continue
        gains = np.take_along_axis(rel[users].toarray(), top[users], axis=1).astype(float)
        hits = gains.sum(axis=1)
        ndcgs.extend(gains @ discounts[:n] / ideal[np.minimum(k, counts[users])])
        recalls.extend(hits / counts[users])
        capped.extend(hits / np.minimum(k, counts[users]))

    def mean(values):
        return float(np.mean(values)) if len(values) else 0.0

    return Ranking(mean(ndcgs), mean(recalls), mean(capped), shown)


# A grid's rankings run this many at once: they are independent, and argpartition and the BLAS
# products release the GIL. Each holds about three blocks of BLOCK_SCORES floats (the scores, a
# product, argpartition's index).
RANKING_THREADS = max(1, min(4, os.cpu_count() or 1))


def each_ranked(fn, args: list, ranked: RankingInputs) -> list:
    """`fn(arg)` for each of `args` (work that ranks `ranked`'s users), RANKING_THREADS at a time,
    the users' item sets built first (`_by_user`) for all of them to share. BLAS runs one thread
    meanwhile: its own threads would compete with the rankings' for the same cores."""
    from threadpoolctl import threadpool_limits

    for sets in (ranked.seen, ranked.relevant):
        _by_user(sets, len(ranked.items))
    with threadpool_limits(1, user_api="blas"), ThreadPoolExecutor(RANKING_THREADS) as pool:
        return list(pool.map(fn, args))


def rank_each(score_rows: dict, ranked: RankingInputs) -> dict:
    """`rank_users` of `ranked`'s users by each value of `score_rows` (any key -> score rows),
    RANKING_THREADS at a time (`each_ranked`). Measured here, 24 rankings of 500 users x 110,000
    items: 13.8 s one at a time, 11.9 s two at a time, 10.1 s two at a time with one BLAS thread each."""
    return dict(zip(score_rows, each_ranked(ranked.rank, list(score_rows.values()), ranked)))


class RankingInputs(NamedTuple):
    """What ranking a split needs: its users, the catalog, each user's items excluded from the
    candidates (`seen`) and held-out hits (`relevant`), by position in `users` and `items`."""

    users: pd.DataFrame
    items: pd.DataFrame
    seen: list[set[int]]
    relevant: list[set[int]]

    def rank(self, score_rows) -> Ranking:
        """`rank_users` of these users by `score_rows(lo, hi)` (the scores of users lo..hi-1 over `items`)."""
        return rank_users(score_rows, len(self.users), self.seen, self.relevant)

    def coverage(self, ranking: Ranking) -> float:
        """The share of the catalog that `ranking`'s top-10 lists show."""
        return len(ranking.shown) / len(self.items)


# The validation rankings of a search rank at most this many user x item scores each (at least
# MIN_TUNING_USERS users): at scale 100 (11,000 items) all 5,000 sampled users, at scale 1000
# (110,000 items) 500, so each of the hundreds of rankings a search makes costs about the same.
TUNING_MAX_SCORES = 55_000_000
MIN_TUNING_USERS = 500


def ranking_inputs(s: RecommenderSpec, train: pd.DataFrame, test: pd.DataFrame, seed: int = 0,
                   also_seen: pd.DataFrame | None = None, max_scores: int | None = None) -> RankingInputs:
    """Test users (a seeded sample past MAX_RANKED_USERS, or past `max_scores` // catalog size
    but at least MIN_TUNING_USERS), the whole catalog (items seen in train, test or `also_seen`),
    each user's items seen in training or in `also_seen` (the validation split: never
    candidates, since they can never count as hits) and relevant held-out items (rated >=
    RELEVANT_RATING)."""
    seen_frame = train if also_seen is None else pd.concat([train, also_seen])
    items = pd.concat([seen_frame, test])[s.item_columns()].drop_duplicates(s.item_id).reset_index(drop=True)
    users = test[s.user_columns()].drop_duplicates(s.user_id)
    most = MAX_RANKED_USERS if max_scores is None else min(
        MAX_RANKED_USERS, max(MIN_TUNING_USERS, max_scores // max(len(items), 1)))
    if len(users) > most:
        users = users.sample(most, random_state=seed)
    users = users.reset_index(drop=True)
    test = test[test[s.user_id].isin(users[s.user_id])]
    item_pos = pd.Series(np.arange(len(items)), index=items[s.item_id])
    user_pos = pd.Series(np.arange(len(users)), index=users[s.user_id])
    seen = _ItemSets(set() for _ in range(len(users)))
    relevant = _ItemSets(set() for _ in range(len(users)))
    known = seen_frame[seen_frame[s.user_id].isin(user_pos.index)]
    for u, i in zip(known[s.user_id].map(user_pos), known[s.item_id].map(item_pos)):
        seen[u].add(int(i))
    hits = test[test[s.rating] >= RELEVANT_RATING]
    for u, i in zip(hits[s.user_id].map(user_pos), hits[s.item_id].map(item_pos)):
        relevant[u].add(int(i))
    return RankingInputs(users, items, seen, relevant)


def validation_inputs(spec: RecommenderSpec, train: pd.DataFrame, valid: pd.DataFrame) -> RankingInputs:
    """The validation users every choice of a search ranks (a sample within TUNING_MAX_SCORES):
    the ALS setting's, EASE's L2 and the hybrid's ranking weights."""
    return ranking_inputs(spec, train, valid, max_scores=TUNING_MAX_SCORES)


def model_rows(model: HybridRecommender, users: pd.DataFrame, items: pd.DataFrame):
    item_vectors = model.item_embeddings(items).astype(np.float64)
    return lambda lo, hi: model.user_embeddings(users.iloc[lo:hi]).astype(np.float64) @ item_vectors.T


def evaluate(model: HybridRecommender, train: pd.DataFrame, test: pd.DataFrame,
             valid: pd.DataFrame | None = None, held_out: RankingInputs | None = None) -> dict:
    """Metrics of `model` (trained on `train`) and of the baselines, on `test` (the items a user
    has in `valid` are excluded from that user's candidates, like the training items).
    `held_out`: `ranking_inputs(spec, train, test, also_seen=valid)` if built already."""
    s = model.spec
    y = test[s.rating].astype(float).to_numpy()
    bias = BiasBaseline(s).fit(train)
    mean = float(train[s.rating].mean())
    predicted = model.predict(test)
    metrics = {
        "rmse": rmse(y, predicted), "mae": mae(y, predicted),
        "rmse_global_mean": rmse(y, np.full_like(y, mean)), "mae_global_mean": mae(y, np.full_like(y, mean)),
        "rmse_bias": rmse(y, bias.predict(test)), "mae_bias": mae(y, bias.predict(test)),
        "test_ratings": int(len(test)), "train_ratings": int(len(train)),
    }
    held = held_out or ranking_inputs(s, train, test, also_seen=valid)
    mine = held.rank(model_rows(model, held.users, held.items))
    popularity = train[s.item_id].value_counts().reindex(held.items[s.item_id]).fillna(0).to_numpy(dtype=float)
    pop = held.rank(lambda lo, hi: np.tile(popularity, (hi - lo, 1)))
    metrics.update({
        f"ndcg@{K}": mine.ndcg, f"recall@{K}": mine.recall, f"recall@{K}_capped": mine.recall_capped,
        "coverage": held.coverage(mine),
        f"ndcg@{K}_popularity": pop.ndcg, f"recall@{K}_popularity": pop.recall,
        f"recall@{K}_capped_popularity": pop.recall_capped, "coverage_popularity": held.coverage(pop),
        "users_ranked": int(sum(1 for r in held.relevant if r)), "catalog_items": int(len(held.items)),
    })
    return metrics


# -- implicit ALS: the collaborative ranking baseline, tuned on the validation split -------------
# A wide grid: on MovieLens 100K the best regularization is about 100 and the best alpha 5, far
# from implicit's defaults (0.01, 1); a grid capped at regularization 1 tuned a weak baseline.
ALS_GRID = {"factors": (16, 32, 64, 128), "regularization": (0.01, 0.1, 1.0, 10.0, 30.0, 100.0, 300.0, 1000.0),
            "alpha": (1.0, 2.0, 5.0, 10.0, 20.0, 40.0), "iterations": (15, 30)}
# Where the search begins: regularization 100, near where every data set measured ends (100-300);
# below it NDCG is flat and noisy, so a climb from 1 could stop there (`coordinate_search`).
ALS_START = {"factors": 32, "regularization": 100.0, "alpha": 10.0, "iterations": 15}


@dataclass
class ALSBaseline:
    """`implicit`'s alternating least squares on the ratings as confidence (1 + alpha * rating):
    a well-kept collaborative filter the model must rank at least as well as. A user or item not
    in training has no factors: it scores by popularity (the fallback a deployment would use).
    `settings`: the ALS the hybrid's collaborative part would fit (its `feature_ridge` unused)."""

    spec: RecommenderSpec
    settings: CollaborativeSettings
    seed: int = 0

    def fit(self, train: pd.DataFrame, factors: tuple[np.ndarray, np.ndarray] | None = None) -> ALSBaseline:
        """`factors`: the (users, items) ALS factors of `train` at these settings if computed already
        (the hybrid's collaborative part at the same setting has them: `collaborative.als_factors`
        fits both, users and items in the order of their first rating)."""
        s = self.spec
        users, items, u_index, i_index = training_rows(s, train)
        self.users, self.items = pd.Index(users[s.user_id]), pd.Index(items[s.item_id])
        if factors is None:
            factors = als_factors(u_index, i_index, train[s.rating].astype(float).to_numpy(), len(users), len(items),
                                  self.settings, self.seed)
        self.user_factors, self.item_factors = factors
        self.popularity = train[s.item_id].value_counts()
        return self

    @property
    def setting(self) -> dict:
        """The settings as searched, named and recorded (`als_setting`)."""
        return als_setting(self.settings)

    def score_rows(self, users: pd.DataFrame, items: pd.DataFrame):
        s = self.spec
        u_pos = self.users.get_indexer(users[s.user_id])
        i_pos = self.items.get_indexer(items[s.item_id])
        item_factors = np.where(i_pos[:, None] >= 0, self.item_factors[np.maximum(i_pos, 0)], 0.0)
        fallback = _popularity(self.popularity, items[s.item_id])

        def rows(lo: int, hi: int) -> np.ndarray:
            block = u_pos[lo:hi]
            out = self.user_factors[np.maximum(block, 0)] @ item_factors.T
            out[block < 0] = fallback  # a user unseen in training: popularity
            return out

        return rows


def _popularity(counts: pd.Series, item_ids: pd.Series) -> np.ndarray:
    """Each item's training ratings scaled to [0, 1] (0: unseen), the fallback of a user without history."""
    row = counts.reindex(item_ids).fillna(0).to_numpy(dtype=float)
    return row / (row.max() or 1.0)


def als_setting(c: CollaborativeSettings) -> dict:
    """An ALS setting as searched, named and recorded (`Tuned.als`): factors, regularization,
    alpha, iterations, and dislikes only when set, so that a setting without them keeps its name."""
    setting = {"factors": c.factors, "regularization": c.regularization, "alpha": c.alpha, "iterations": c.iterations}
    return {**setting, "dislikes": c.dislikes} if c.dislikes else setting


def setting_name(setting: dict) -> str:
    return " ".join(f"{k}={v:g}" for k, v in setting.items())


def climb(score, n: int, start: int, ahead: int = 2) -> int:
    """Where a climb from position `start` ends in a row of `n` by `score(i)`: it steps to the
    nearest of the next `ahead` positions that scores better while one does, upward first and
    downward only if upward did not move. Looking two positions ahead carries it across a
    one-value dip, which noisy validation figures make (`coordinate_search`, `tuning.choose_blend`)."""
    at = start
    for step in (1, -1):
        while (better := next((j for j in (at + k * step for k in range(1, ahead + 1))
                               if 0 <= j < n and score(j) > score(at)), None)) is not None:
            at = better
        if at != start:
            break
    return at


def coordinate_search(grid: dict, start: dict, score, name=setting_name) -> tuple[dict, dict[str, float]]:
    """The setting of `grid` (name -> values) with the highest `score(setting)`, by coordinate
    ascent from `start`: each parameter in turn climbs its row (its values in order, the others
    fixed; `climb`), and passes repeat until one changes nothing. A value of `start` outside its
    row, or none: that row is scored whole and its best taken. Regularization's row is flat and noisy
    below 100 (at scale 1000: 0.0270, 0.0272, 0.0258, 0.0266 at 1, 10, 30, 100, then 0.0340 at
    300), deeper than the climb looks ahead, so `ALS_START` begins above that. On six data sets
    (docs/ml.md) the climb from `ALS_START` chose what scoring each row whole did, in 13-25 fits
    instead of 20-33. Like any coordinate search it can stop at a local best, which the full grid
    of `ALS_GRID` (384) would not (the scores per setting tried are returned, so a reader can see
    what was searched, under `name(setting)`: settings of one name are scored once). Ties keep
    the setting found first."""
    tried: dict[str, float] = {}
    best = dict(start)

    def value(setting: dict) -> float:
        key = name(setting)
        if key not in tried:
            tried[key] = score(setting)
        return tried[key]

    changed = True
    while changed:
        changed = False
        for param, values in grid.items():
            values = sorted(values)

            def row(j: int, param=param, values=values, best=best) -> float:
                return value({**best, param: values[j]})

            if best.get(param) in values:
                at = climb(row, len(values), values.index(best[param]))
            else:
                at = max(range(len(values)), key=row)
            if values[at] != best.get(param):
                best, changed = {**best, param: values[at]}, True
    return best, tried


class ALSSearch(NamedTuple):
    """What `tune_als` found: the best ALS, fitted on the ratings searched, its top-10 lists'
    share of the catalog on validation, NDCG@10 per setting tried, and how many training ratings
    the search saw."""

    model: ALSBaseline
    validation_coverage: float
    ndcg_by_setting: dict[str, float]
    searched_ratings: int


def tune_als(spec: RecommenderSpec, train: pd.DataFrame, valid: pd.DataFrame, grid: dict = ALS_GRID,
             start: dict = ALS_START, seed: int = 0, ranked: RankingInputs | None = None) -> ALSSearch:
    """The ALS whose NDCG@10 on `valid` is best over `grid` (`coordinate_search` from `start`).
    `ranked`: `validation_inputs(spec, train, valid)` if built already."""
    ranked = ranked or validation_inputs(spec, train, valid)
    kept: dict = {"ndcg": -1.0}  # only the best model so far stays in memory

    def score(setting: dict) -> float:
        als = ALSBaseline(spec, CollaborativeSettings(**setting), seed).fit(train)
        result = ranked.rank(als.score_rows(ranked.users, ranked.items))
        if result.ndcg > kept["ndcg"]:  # the search's best is the first of the highest scores, as here
            kept.update(model=als, ndcg=result.ndcg, coverage=ranked.coverage(result))
        return result.ndcg

    # named as the ALS each fits (`als_setting`): "dislikes=0" is the setting without dislikes
    _, tried = coordinate_search(grid, start, score, lambda setting: setting_name(als_setting(CollaborativeSettings(**setting))))
    return ALSSearch(kept["model"], kept["coverage"], tried, len(train))


# -- EASE: the item-item closed form (Steck, 2019), tuned on the validation split ---------------
EASE_L2_GRID = (20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0)
EASE_L2_START = 500.0
# Each L2 tried is a dense items x items inverse: about 1 s for 1,700 items, 2 minutes for 11,000
# here. Past this many items `train_recommender` leaves EASE out (the benchmark raises it).
EASE_MAX_ITEMS = 5_000


@dataclass
class EASEBaseline:
    """Embarrassingly shallow autoencoder: item-item weights B = argmin |X - XB|^2 + l2 |B|^2 with
    diag(B) = 0, in closed form from P = (X'X + l2 I)^-1: B = -P / diag(P). X is the binary
    user x item matrix of training ratings; a user's score for an item is its row of X times B.
    A strong baseline on explicit-rating data turned into implicit feedback; its cost is a dense
    inverse of the catalog (`tune_ease` fits it up to `max_items`). A user unseen in training
    scores by popularity."""

    spec: RecommenderSpec
    l2: float = 500.0

    def fit(self, train: pd.DataFrame, matrix: tuple | None = None) -> EASEBaseline:
        """`matrix`: (X, X'X) of `train` if already computed (`tune_ease` shares them across L2)."""
        s = self.spec
        self.users = pd.Index(train[s.user_id].unique())
        self.items = pd.Index(train[s.item_id].unique())
        self.x = _binary_matrix(train, s, self.users, self.items) if matrix is None else matrix[0]
        gram = (self.x.T @ self.x).toarray() if matrix is None else matrix[1]
        p = np.linalg.inv(gram + self.l2 * np.eye(len(self.items)))
        self.weights = -p / np.diag(p)
        np.fill_diagonal(self.weights, 0.0)
        self.popularity = train[s.item_id].value_counts()
        return self

    def score_rows(self, users: pd.DataFrame, items: pd.DataFrame):
        s = self.spec
        u_pos = self.users.get_indexer(users[s.user_id])
        i_pos = self.items.get_indexer(items[s.item_id])
        columns = np.where(i_pos[None, :] >= 0, self.weights[:, np.maximum(i_pos, 0)], 0.0)
        fallback = _popularity(self.popularity, items[s.item_id])

        def rows(lo: int, hi: int) -> np.ndarray:
            block = u_pos[lo:hi]
            out = np.asarray(self.x[np.maximum(block, 0)] @ columns)
            out[block < 0] = fallback
            return out

        return rows


def _binary_matrix(train: pd.DataFrame, s: RecommenderSpec, users: pd.Index, items: pd.Index):
    import scipy.sparse as sp

    rows, cols = users.get_indexer(train[s.user_id]), items.get_indexer(train[s.item_id])
    x = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(users), len(items)))
    x.data[:] = 1.0  # a pair rated twice is one interaction
    return x


def tune_ease(spec: RecommenderSpec, train: pd.DataFrame, valid: pd.DataFrame, grid=EASE_L2_GRID,
              start: float = EASE_L2_START, max_items: int = EASE_MAX_ITEMS, ranked: RankingInputs | None = None,
              ) -> tuple[EASEBaseline | None, dict[str, float]]:
    """The EASE whose NDCG@10 on `valid` is best over the L2 `grid`, and NDCG per L2 tried;
    (None, {}) when the catalog has more than `max_items` items. From `start`, the search climbs
    to the better neighbour in the grid while one is better (each L2 costs an inverse of the
    catalog; NDCG against L2 has one peak in every data set measured). `ranked`: the validation
    users the model's own choices ranked (`validation_inputs`), if built already."""
    if train[spec.item_id].nunique() > max_items:
        return None, {}
    ranked = ranked or validation_inputs(spec, train, valid)
    s = spec
    x = _binary_matrix(train, s, pd.Index(train[s.user_id].unique()), pd.Index(train[s.item_id].unique()))
    gram = (x.T @ x).toarray()
    grid = sorted(grid)
    fitted: dict[int, tuple[EASEBaseline, float]] = {}

    def ndcg_at(n: int) -> float:
        if n not in fitted:
            ease = EASEBaseline(spec, l2=grid[n]).fit(train, matrix=(x, gram))
            fitted[n] = (ease, ranked.rank(ease.score_rows(ranked.users, ranked.items)).ndcg)
        return fitted[n][1]

    at = min(range(len(grid)), key=lambda n: abs(grid[n] - start))
    while True:
        neighbours = [n for n in (at - 1, at + 1) if 0 <= n < len(grid)]
        better = max(neighbours, key=ndcg_at)
        if ndcg_at(better) <= ndcg_at(at):
            break
        at = better
    return fitted[at][0], {f"l2={grid[n]:g}": fitted[n][1] for n in sorted(fitted)}


def ranking_metrics(spec: RecommenderSpec, score_rows_for, train: pd.DataFrame, test: pd.DataFrame,
                    valid: pd.DataFrame | None = None, held_out: RankingInputs | None = None) -> dict:
    """NDCG@10, recall@10 and top-10 catalog coverage of any scorer on the test split, with the
    same candidates and exclusions as `evaluate` (`score_rows_for(users, items)` gives the rows;
    `held_out` as `evaluate` takes it)."""
    held = held_out or ranking_inputs(spec, train, test, also_seen=valid)
    r = held.rank(score_rows_for(held.users, held.items))
    return {f"ndcg@{K}": r.ndcg, f"recall@{K}": r.recall, "coverage": held.coverage(r)}
