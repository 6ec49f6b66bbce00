"""Held-out evaluation of a recommender against baselines: RMSE, MAE, NDCG@10, Recall@10, coverage."""

from __future__ import annotations

import copy
from concurrent.futures import ThreadPoolExecutor
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


def _ranking(score_rows, n_users: int, seen: list[set[int]], relevant: list[set[int]], k: int = K) -> Ranking:
    """`score_rows(lo, hi)` returns the (hi - lo, catalog) scores of users lo..hi-1, as a new
    array that this overwrites (seen items become -inf). Each block of users is ranked at once:
    the k best per row, best first."""
    ndcgs, recalls, capped, shown = [], [], [], set()
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.r_[0.0, np.cumsum(discounts)]  # the best DCG for 0..k relevant items
    seen_m = relevant_m = None
    for lo in range(0, n_users, CHUNK):
        block = np.asarray(score_rows(lo, min(lo + CHUNK, n_users)), dtype=float)
        hi = lo + block.shape[0]
        if seen_m is None:
            seen_m, relevant_m = _by_user(seen, block.shape[1]), _by_user(relevant, block.shape[1])
        part = seen_m[lo:hi].tocoo()
        block[part.row, part.col] = -np.inf
        n, width = min(k, block.shape[1]), block.shape[1]
        top = np.argpartition(block, width - n, axis=1)[:, width - n:]  # the n largest, unordered
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(block, top, axis=1), axis=1, kind="stable"), axis=1)
        shown.update(np.unique(top).tolist())
        rel = relevant_m[lo:hi]
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


def _ranking_inputs(s: TwoTowerSpec, train: pd.DataFrame, test: pd.DataFrame, seed: int = 0,
                    also_seen: pd.DataFrame | None = None):
    """Test users (a seeded sample past MAX_RANKED_USERS), the whole catalog (items seen in train,
    test or `also_seen`), each user's items seen in training or in `also_seen` (the validation
    split: never candidates, since they can never count as hits) and relevant held-out items
    (rated >= RELEVANT_RATING)."""
    seen_frame = train if also_seen is None else pd.concat([train, also_seen])
    items = pd.concat([seen_frame, test])[s.item_columns()].drop_duplicates(s.item_id).reset_index(drop=True)
    users = test[s.user_columns()].drop_duplicates(s.user_id)
    if len(users) > MAX_RANKED_USERS:
        users = users.sample(MAX_RANKED_USERS, random_state=seed)
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
    return users, items, seen, relevant


POPULARITY_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
MAX_POPULARITY_WEIGHT = 256.0


def _model_rows(model: TwoTowerRecommender, users: pd.DataFrame, items: pd.DataFrame):
    item_vectors = model.item_embeddings(items).astype(np.float64)
    return lambda lo, hi: model.user_embeddings(users.iloc[lo:hi]).astype(np.float64) @ item_vectors.T


class _WeightedScores:
    """The model's ranking score split into its parts, embedded once, so that a grid over the
    ranking weights costs products, not feature transforms: score = base + collaborative weight *
    collaborative part + popularity weight * log(1 + training ratings of the item). Equal, for each
    setting, to `_model_rows` with the model's weights set to it."""

    def __init__(self, model: TwoTowerRecommender, users: pd.DataFrame, items: pd.DataFrame):
        saved = model.als_weight, model.popularity_weight
        model.als_weight, model.popularity_weight = 1.0, 0.0
        try:
            self.u = model.user_embeddings(users).astype(np.float64)
            self.v = model.item_embeddings(items).astype(np.float64)
            model.popularity_weight = 1.0
            self.prior = model.popularity_prior(items)
        finally:
            model.als_weight, model.popularity_weight = saved
        self.split = model.k + 2  # the collaborative dimensions follow the tower and the two biases

    def spreads(self, users: int = CHUNK) -> tuple[float, float]:
        """Standard deviations of the base and collaborative scores over the first `users` users."""
        u, v, k = self.u[:users], self.v, self.split
        return float(np.std(u[:, :k] @ v[:, :k].T)), float(np.std(u[:, k:] @ v[:, k:].T))

    def rows(self, collaborative: float, popularity: float):
        u, v, k = self.u, self.v, self.split
        item_base, item_collab = v[:, :k].T, v[:, k:].T

        def score(lo: int, hi: int) -> np.ndarray:
            out = u[lo:hi, :k] @ item_base + popularity * self.prior
            if collaborative and item_collab.shape[0]:
                out += collaborative * (u[lo:hi, k:] @ item_collab)
            return out

        return score


def choose_popularity_weight(model: TwoTowerRecommender, train: pd.DataFrame, valid: pd.DataFrame,
                             weights=POPULARITY_WEIGHTS) -> dict[float, float]:
    """Set `model.popularity_weight` to the weight with the best NDCG@10 on `valid` (never the
    test split); returns NDCG@10 per weight tried. While the best is the largest weight tried,
    the grid doubles (up to MAX_POPULARITY_WEIGHT), so the choice is never its edge by default."""
    users, items, seen, relevant = _ranking_inputs(model.spec, train, valid)
    scores = _WeightedScores(model, users, items)
    tried: dict[float, float] = {}

    def best() -> float:
        return max(tried, key=lambda w: (tried[w], -w))

    pending = list(weights)
    while pending:
        for w in pending:
            tried[w] = _ranking(scores.rows(model.als_weight, w), len(users), seen, relevant).ndcg
        top = max(tried)
        pending = [top * 2] if best() == top and 0 < top < MAX_POPULARITY_WEIGHT else []
    model.popularity_weight = best()
    return tried


BLEND_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 6.0, 8.0)
# The hybrid's popularity weights: a negative one demotes popular items.
BLEND_POPULARITY = (-1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0)
# The collaborative item factors divided by their norm to these powers (`als_norm_power`): the
# norm grows with an item's ratings, so at 0 the same popular items top every list; at 1 the
# factors rank by direction and the popularity weight alone says how much popularity counts.
NORM_POWERS = (0.0, 0.5, 1.0)
MIN_COVERAGE = 0.2  # top-10 lists should show at least this share of the catalog (validation)


def choose_blend(model: TwoTowerRecommender, train: pd.DataFrame, valid: pd.DataFrame,
                 weights=BLEND_WEIGHTS, popularity=BLEND_POPULARITY, norm_powers=NORM_POWERS,
                 min_coverage: float = MIN_COVERAGE) -> dict[str, dict[str, float]]:
    """Set the ranking's three settings together, on `valid`: `model.als_weight` (the
    collaborative part's weight in the score), `model.popularity_weight` and
    `model.als_norm_power`. The best NDCG@10 among the settings whose top-10 lists cover at least
    `min_coverage` of the catalog (the popularity prior and the factor norms buy NDCG with
    coverage), or the best NDCG if none does; ties go to the smaller weights. Relative weight
    1.0: both parts' scores equally spread over the validation users. Returns NDCG@10 and
    coverage per setting tried (with its norm power); the chosen one also has `"chosen": True`."""
    if not model.als_factors:
        return {}
    users, items, seen, relevant = _ranking_inputs(model.spec, train, valid)
    tried: dict[str, dict[str, float]] = {}
    results = []
    for power in norm_powers:
        model.als_norm_power = power
        scores = _WeightedScores(model, users, items)
        base, collaborative = scores.spreads()
        unit = base / (collaborative or 1.0)
        for c in weights:
            if power and not c:
                continue  # without the collaborative part the norm changes nothing
            for w in popularity:
                r = _ranking(scores.rows(c * unit, w), len(users), seen, relevant)
                coverage = len(r.shown) / len(items)
                key = f"collaborative={c} popularity={w} norm_power={power}"
                tried[key] = {"ndcg": r.ndcg, "coverage": coverage, "norm_power": power}
                results.append((coverage >= min_coverage, r.ndcg, -c, -w, -power, unit, key))
    _, _, c, w, power, unit, key = max(results)
    model.als_weight, model.popularity_weight, model.als_norm_power = -c * unit, -w, -power
    tried[key]["chosen"] = True
    return tried


def choose_weights(model: TwoTowerRecommender, train: pd.DataFrame, valid: pd.DataFrame,
                   min_coverage: float = MIN_COVERAGE) -> tuple[dict, dict]:
    """The ranking weights on `valid`: the hybrid chooses its two together (`choose_blend`), the
    two-tower alone its popularity prior. Returns (popularity grid, blend grid); one is empty."""
    if model.als_factors:
        return {}, choose_blend(model, train, valid, min_coverage=min_coverage)
    return choose_popularity_weight(model, train, valid), {}


def evaluate(model: TwoTowerRecommender, train: pd.DataFrame, test: pd.DataFrame,
             valid: pd.DataFrame | None = None) -> dict:
    """Metrics of `model` (trained on `train`) and of the baselines, on `test` (the items a user
    has in `valid` are excluded from that user's candidates, like the training items)."""
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
    users, items, seen, relevant = _ranking_inputs(s, train, test, also_seen=valid)
    mine = _ranking(_model_rows(model, users, items), len(users), seen, relevant)
    popularity = train[s.item_id].value_counts().reindex(items[s.item_id]).fillna(0).to_numpy(dtype=float)
    pop = _ranking(lambda lo, hi: np.tile(popularity, (hi - lo, 1)), len(users), seen, relevant)
    metrics.update({
        f"ndcg@{K}": mine.ndcg, f"recall@{K}": mine.recall, f"recall@{K}_capped": mine.recall_capped,
        "coverage": len(mine.shown) / len(items),
        f"ndcg@{K}_popularity": pop.ndcg, f"recall@{K}_popularity": pop.recall,
        f"recall@{K}_capped_popularity": pop.recall_capped, "coverage_popularity": len(pop.shown) / len(items),
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
    als_ndcg_by_setting: dict[str, float]
    blend_ndcg_by_weight: dict[str, dict]  # NDCG@10, coverage and norm power on validation per setting


L2_GRID = (80.0, 200.0, 500.0)  # the towers' L2 tried on validation (scale 10 prefers 80, scale 100 500)


def choose_l2(model: TwoTowerRecommender, train: pd.DataFrame, valid: pd.DataFrame,
              grid=L2_GRID) -> tuple[TwoTowerRecommender, dict[float, float]]:
    """A copy of `model` fitted on `train` with the towers' L2 in `grid` (the bias columns keep
    `bias_l2`) that has the lowest validation RMSE, and the RMSE per L2 tried.

    From the largest L2 down, stopping at the first that raises validation RMSE: a smaller L2
    fits the training ratings more closely, and past the best it only overfits more. The
    smaller the L2, the more sweeps the fit takes (scale 1000: 22 at 80, 5 at 500), so large data,
    which prefers a large L2, stops before the slow fits. The towers alone predict the ratings,
    so the collaborative part (which does not depend on L2) is fitted once, on the copy kept.
    Each fit after the first starts from the previous one's item tower (`warm_start`): at scale
    1000 (collaborative, numpy solves) the whole choice took 99 s instead of 113 s. The
    collaborative factors are computed meanwhile on one core (implicit's ALS releases the GIL),
    then attached to the copy kept: at scale 1000 (features, 30 ALS iterations, compiled solves)
    the choice takes about 101 s this way, about 120 s one after the other. The training frame
    is encoded once (`encode_training`) and the validation rows once, for every L2: at scale 1000
    a fit re-encoding both cost about 5 s more each. Timings: docs/ml.md."""
    tried: dict[float, float] = {}
    best: TwoTowerRecommender | None = None
    y = valid[model.spec.rating].astype(float).to_numpy()
    with ThreadPoolExecutor(max_workers=1) as pool:
        factors = pool.submit(model.collaborative_factors, train, threads=1) if model.als_factors else None
        encoded = model.encode_training(train)  # once for every L2: the rows, the encoders, the solver's sides
        valid_x = (encoded.user_encoder.transform(valid), encoded.item_encoder.transform(valid))
        for l2 in sorted(map(float, grid), reverse=True):
            # each fit starts where the previous one ended; the fitted encoders are shared, not copied
            shared = {id(encoded.user_encoder): encoded.user_encoder, id(encoded.item_encoder): encoded.item_encoder}
            candidate = copy.deepcopy(best or model, memo=shared)
            candidate.l2, candidate.warm_start = l2, best is not None
            candidate.fit(train, collaborative=False, encoded=encoded)
            tried[l2] = _rmse(y, candidate.predict_encoded(*valid_x))
            candidate.warm_start = model.warm_start
            if best is not None and tried[l2] >= tried[best.l2]:
                break
            best = candidate  # only the best fit is kept
        return best.fit_collaborative(train, factors=factors.result() if factors else None, encoded=encoded), tried


def train_and_evaluate(frame: pd.DataFrame, model: TwoTowerRecommender, test_share: float = 0.2,
                       valid_share: float = 0.1, seed: int = 0, als: bool = True,
                       min_coverage: float = MIN_COVERAGE, l2_grid=None) -> TrainingRun:
    """Split train/valid/test, fit on train (with `l2_grid`: once per L2, keeping the lowest
    validation RMSE), choose the ranking weights on valid, score on test; with `als`, implicit
    ALS tuned on the same validation split is scored on the same test."""
    rest, test = split(frame, test_share, seed)
    train, valid = split(rest, valid_share / (1 - test_share), seed + 1)
    l2_tried: dict[float, float] = {}
    if l2_grid:
        model, l2_tried = choose_l2(model, train, valid, l2_grid)
    else:
        model.fit(train)
    tried, blend_tried = choose_weights(model, train, valid, min_coverage)
    metrics = evaluate(model, train, test, valid)
    metrics["popularity_weight"] = model.popularity_weight
    if model.als_factors:
        metrics["als_weight"] = model.als_weight
        metrics["als_norm_power"] = model.als_norm_power
    metrics["training_iterations"] = model.iterations
    metrics["training_converged"] = model.converged
    metrics["l2"] = model.l2
    if l2_tried:
        metrics["validation_rmse_by_l2"] = {str(k): round(v, 4) for k, v in l2_tried.items()}
    als_tried: dict[str, float] = {}
    if als:
        best, als_tried = tune_als(model.spec, train, valid)
        for name, value in ranking_metrics(model.spec, best.score_rows, train, test, valid).items():
            metrics[f"{name}_als"] = value
        metrics["als_params"] = f"factors={best.factors} regularization={best.regularization} alpha={best.alpha}"
    return TrainingRun(model, train, valid, test, metrics, tried, als_tried, blend_tried)


# -- implicit ALS: the collaborative ranking baseline, tuned on the validation split -------------
ALS_GRID = {"factors": (16, 32, 64), "regularization": (0.01, 0.1, 1.0), "alpha": (1.0, 10.0)}


@dataclass
class ALSBaseline:
    """`implicit`'s alternating least squares on the ratings as confidence (1 + alpha * rating):
    a well-kept collaborative filter the model must rank at least as well as. A user or item not
    in training has no factors: it scores by popularity (the fallback a deployment would use)."""

    spec: TwoTowerSpec
    factors: int = 32
    regularization: float = 0.1
    alpha: float = 1.0
    iterations: int = 15
    seed: int = 0

    def fit(self, train: pd.DataFrame) -> ALSBaseline:
        import implicit
        import scipy.sparse as sp
        from threadpoolctl import threadpool_limits

        s = self.spec
        self.users = pd.Index(train[s.user_id].unique())
        self.items = pd.Index(train[s.item_id].unique())
        rows, cols = self.users.get_indexer(train[s.user_id]), self.items.get_indexer(train[s.item_id])
        confidence = 1.0 + self.alpha * train[s.rating].astype(float).to_numpy()
        matrix = sp.csr_matrix((confidence, (rows, cols)), shape=(len(self.users), len(self.items)))
        with threadpool_limits(1, "blas"):  # implicit's advice (it checks at construction): BLAS threads fight its own
            self.model = implicit.cpu.als.AlternatingLeastSquares(
                factors=self.factors, regularization=self.regularization, iterations=self.iterations,
                random_state=self.seed, calculate_training_loss=False)
            self.model.fit(matrix, show_progress=False)
        self.popularity = train[s.item_id].value_counts()
        return self

    def score_rows(self, users: pd.DataFrame, items: pd.DataFrame):
        s = self.spec
        u_pos = self.users.get_indexer(users[s.user_id])
        i_pos = self.items.get_indexer(items[s.item_id])
        item_factors = np.where(i_pos[:, None] >= 0, self.model.item_factors[np.maximum(i_pos, 0)], 0.0)
        fallback = self.popularity.reindex(items[s.item_id]).fillna(0).to_numpy(dtype=float)
        fallback = fallback / (fallback.max() or 1.0)

        def rows(lo: int, hi: int) -> np.ndarray:
            block = u_pos[lo:hi]
            out = self.model.user_factors[np.maximum(block, 0)] @ item_factors.T
            out[block < 0] = fallback  # a user unseen in training: popularity
            return out

        return rows


def tune_als(spec: TwoTowerSpec, train: pd.DataFrame, valid: pd.DataFrame, grid: dict = ALS_GRID) -> tuple[ALSBaseline, dict]:
    """The ALS whose NDCG@10 on `valid` is best over `grid`; returns it and NDCG per setting."""
    users, items, seen, relevant = _ranking_inputs(spec, train, valid)
    tried, best, best_ndcg = {}, None, -1.0
    for factors in grid["factors"]:
        for reg in grid["regularization"]:
            for alpha in grid["alpha"]:
                als = ALSBaseline(spec, factors=factors, regularization=reg, alpha=alpha).fit(train)
                ndcg = _ranking(als.score_rows(users, items), len(users), seen, relevant).ndcg
                tried[f"factors={factors} regularization={reg} alpha={alpha}"] = ndcg
                if ndcg > best_ndcg:
                    best, best_ndcg = als, ndcg
    return best, tried


def ranking_metrics(spec: TwoTowerSpec, score_rows_for, train: pd.DataFrame, test: pd.DataFrame,
                    valid: pd.DataFrame | None = None) -> dict:
    """NDCG@10, recall@10 and top-10 catalog coverage of any scorer on the test split, with the
    same candidates and exclusions as `evaluate` (`score_rows_for(users, items)` gives the rows)."""
    users, items, seen, relevant = _ranking_inputs(spec, train, test, also_seen=valid)
    r = _ranking(score_rows_for(users, items), len(users), seen, relevant)
    return {f"ndcg@{K}": r.ndcg, f"recall@{K}": r.recall, "coverage": len(r.shown) / len(items)}
