"""Choosing the hybrid's settings on the validation split: the towers' L2 and the ranking weights.

Each choice returns what it chose (and every setting's validation figure); none changes a model
it was given. The trainer (`training.train_and_evaluate`) applies them.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from recsys_platform.ml.evaluation import CHUNK, rank_users, ranking_inputs, rmse
from recsys_platform.ml.hybrid import HybridRecommender
from recsys_platform.ml.published import RankingWeights

L2_GRID = (80.0, 200.0, 500.0)  # the towers' L2 tried on validation (scale 10 prefers 80, scale 100 500)
POPULARITY_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)
MAX_POPULARITY_WEIGHT = 256.0
BLEND_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 6.0, 8.0)
# The hybrid's popularity weights: a negative one demotes popular items.
BLEND_POPULARITY = (-1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0)
# The collaborative item factors divided by their norm to these powers (`RankingWeights.norm_power`):
# the norm grows with an item's ratings, so at 0 the same popular items top every list; at 1 the
# factors rank by direction and the popularity weight alone says how much popularity counts.
NORM_POWERS = (0.0, 0.5, 1.0)
MIN_COVERAGE = 0.2  # top-10 lists should show at least this share of the catalog (validation)


@dataclass(frozen=True)
class L2Choice:
    """The towers' L2 with the lowest validation RMSE, the RMSE per L2 tried, and the model
    fitted at it (with its collaborative part)."""

    l2: float
    validation_rmse: dict[float, float]
    model: HybridRecommender


def choose_l2(model: HybridRecommender, train: pd.DataFrame, valid: pd.DataFrame, grid=L2_GRID) -> L2Choice:
    """Fit `model`'s settings on `train` at each towers' L2 of `grid` (the bias columns keep
    their own) and keep the one with the lowest validation RMSE.

    From the largest L2 down, stopping at the first that raises validation RMSE: a smaller L2
    fits the training ratings more closely, and past the best it only overfits more. The
    smaller the L2, the more sweeps the fit takes, so large data, which prefers a large L2, stops
    before the slow fits. The towers alone predict the ratings, so the collaborative part (which
    does not depend on L2) is fitted once, on the model kept. Each fit after the first starts
    from the previous one's item tower. The collaborative factors are computed meanwhile on one
    core (implicit's ALS releases the GIL), then attached to the model kept. The training frame
    is encoded once (`encode_training`) and the validation rows once, for every L2. Timings:
    docs/ml.md."""
    tried: dict[float, float] = {}
    best: HybridRecommender | None = None
    y = valid[model.spec.rating].astype(float).to_numpy()
    with ThreadPoolExecutor(max_workers=1) as pool:
        factors = (pool.submit(model.collaborative_factors, train, threads=1)
                   if model.settings.collaborative.factors else None)
        encoded = model.encode_training(train)  # once for every L2: the rows, the encoders, the solver's sides
        valid_x = (encoded.user_encoder.transform(valid), encoded.item_encoder.transform(valid))
        for l2 in sorted(map(float, grid), reverse=True):
            candidate = model.with_settings(l2=l2).fit(
                train, collaborative=False, encoded=encoded, start=None if best is None else best.item_weights)
            tried[l2] = rmse(y, candidate.predict_encoded(*valid_x))
            if best is not None and tried[l2] >= tried[best.settings.l2]:
                break
            best = candidate  # only the best fit is kept
        best.fit_collaborative(train, factors=factors.result() if factors else None, encoded=encoded)
    return L2Choice(best.settings.l2, tried, best)


class _WeightedScores:
    """The model's ranking score split into its parts, embedded once, so that a grid over the
    ranking weights costs products, not feature transforms: score = base + collaborative weight *
    collaborative part + popularity weight * log(1 + training ratings of the item). Equal, for each
    setting, to the model's own scores with those `RankingWeights`."""

    def __init__(self, model: HybridRecommender, users: pd.DataFrame, items: pd.DataFrame, norm_power: float):
        parts = RankingWeights(collaborative=1.0, popularity=0.0, norm_power=norm_power)
        self.u = model.user_embeddings(users, ranking=parts).astype(np.float64)
        self.v = model.item_embeddings(items, ranking=parts).astype(np.float64)
        self.prior = model.popularity_prior(items, RankingWeights(popularity=1.0))
        self.split = model.tower_width + 2  # the collaborative dimensions follow the tower and the two biases

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


def choose_popularity_weight(model: HybridRecommender, train: pd.DataFrame, valid: pd.DataFrame,
                             weights=POPULARITY_WEIGHTS) -> tuple[RankingWeights, dict[float, float]]:
    """The popularity weight with the best NDCG@10 on `valid` (never the test split), the model's
    other weights kept, and NDCG@10 per weight tried. While the best is the largest weight tried,
    the grid doubles (up to MAX_POPULARITY_WEIGHT), so the choice is never its edge by default."""
    users, items, seen, relevant = ranking_inputs(model.spec, train, valid)
    scores = _WeightedScores(model, users, items, model.ranking.norm_power)
    tried: dict[float, float] = {}

    def best() -> float:
        return max(tried, key=lambda w: (tried[w], -w))

    pending = list(weights)
    while pending:
        for w in pending:
            tried[w] = rank_users(scores.rows(model.ranking.collaborative, w), len(users), seen, relevant).ndcg
        top = max(tried)
        pending = [top * 2] if best() == top and 0 < top < MAX_POPULARITY_WEIGHT else []
    return RankingWeights(model.ranking.collaborative, best(), model.ranking.norm_power), tried


def choose_blend(model: HybridRecommender, train: pd.DataFrame, valid: pd.DataFrame,
                 weights=BLEND_WEIGHTS, popularity=BLEND_POPULARITY, norm_powers=NORM_POWERS,
                 min_coverage: float = MIN_COVERAGE) -> tuple[RankingWeights, dict[str, dict[str, float]]]:
    """The ranking's three weights chosen together on `valid`: the collaborative part's weight,
    the popularity weight and the factors' norm power. The best NDCG@10 among the settings whose
    top-10 lists cover at least `min_coverage` of the catalog (the popularity prior and the factor
    norms buy NDCG with coverage), or the best NDCG if none does; ties go to the smaller weights.
    Relative weight 1.0: both parts' scores equally spread over the validation users. Returns the
    weights, and NDCG@10 and coverage per setting tried (with its norm power; the chosen one also
    has `"chosen": True`)."""
    users, items, seen, relevant = ranking_inputs(model.spec, train, valid)
    tried: dict[str, dict[str, float]] = {}
    results = []
    for power in norm_powers:
        scores = _WeightedScores(model, users, items, power)
        base, collaborative = scores.spreads()
        unit = base / (collaborative or 1.0)
        for c in weights:
            if power and not c:
                continue  # without the collaborative part the norm changes nothing
            for w in popularity:
                r = rank_users(scores.rows(c * unit, w), len(users), seen, relevant)
                coverage = len(r.shown) / len(items)
                key = f"collaborative={c} popularity={w} norm_power={power}"
                tried[key] = {"ndcg": r.ndcg, "coverage": coverage, "norm_power": power}
                results.append((coverage >= min_coverage, r.ndcg, -c, -w, -power, unit, key))
    _, _, c, w, power, unit, key = max(results)
    tried[key]["chosen"] = True
    return RankingWeights(collaborative=-c * unit, popularity=-w, norm_power=-power), tried


@dataclass(frozen=True)
class RankingChoice:
    """The ranking weights chosen on validation, and the grid each was chosen from (one is empty:
    the hybrid chooses its three weights together, the towers alone their popularity weight)."""

    weights: RankingWeights
    popularity_ndcg_by_weight: dict[float, float]
    blend_by_setting: dict[str, dict]  # NDCG@10, coverage and norm power per setting


def choose_ranking(model: HybridRecommender, train: pd.DataFrame, valid: pd.DataFrame,
                   min_coverage: float = MIN_COVERAGE) -> RankingChoice:
    """The ranking weights of a fitted model on `valid`."""
    if model.settings.collaborative.factors:
        weights, blend = choose_blend(model, train, valid, min_coverage=min_coverage)
        return RankingChoice(weights, {}, blend)
    weights, tried = choose_popularity_weight(model, train, valid)
    return RankingChoice(weights, tried, {})


def carry_weights(weights: RankingWeights, chosen_on: HybridRecommender, refit: HybridRecommender,
                  users: pd.DataFrame, items: pd.DataFrame) -> RankingWeights:
    """The ranking weights chosen on `chosen_on`'s validation, for the same settings `refit` on
    more data. The collaborative weight was chosen relative to the spread of the base and the
    collaborative scores (`choose_blend`), and ALS factors fitted on more ratings are spread
    differently, so it keeps that relative size (both spreads over the same `users` and `items`);
    the popularity weight and the norm power are kept as they are."""
    if not weights.collaborative:
        return weights
    before = _WeightedScores(chosen_on, users, items, weights.norm_power).spreads()
    after = _WeightedScores(refit, users, items, weights.norm_power).spreads()
    ratio = (after[0] / (after[1] or 1.0)) / (before[0] / (before[1] or 1.0))
    return replace(weights, collaborative=weights.collaborative * ratio)
