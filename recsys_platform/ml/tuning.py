"""Choosing the hybrid's settings on the validation split: the towers' L2 and the ranking weights
(a known user's and a new user's).

Each choice returns what it chose (and every setting's validation figure); none changes a model
it was given. The trainer (`training.train_recommender`) applies them.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields, replace

import numpy as np
import pandas as pd

from recsys_platform.ml.encoding import TrainingEncoding
from recsys_platform.ml.evaluation import (
    BLOCK_SCORES,
    CHUNK,
    RankingInputs,
    als_setting,
    climb,
    each_ranked,
    rank_each,
    rmse,
    setting_name,
    validation_inputs,
)
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
# A new user's weights (`RankingWeights.new_user_*`): its collaborative weight as a multiple of a
# known user's, and the weight of the item bias with the popularity prior.
NEW_USER_COLLABORATIVE = (0.0, 0.25, 0.5, 1.0, 2.0)
NEW_USER_PRIOR = (0.5, 1.0, 2.0, 4.0, 8.0)
# The row of the ALS grid that the collaborative part searches again for the hybrid, on the
# hybrid's own validation NDCG@10 (`choose_collaborative`). The ALS search chooses for ALS alone;
# beside the towers and the popularity prior the part can prefer another alpha: on collaborative
# data at scale 10, 5 (held out 0.379) where ALS chose 10 (0.364); on MovieLens and the other
# three data sets the same alpha (docs/ml.md). Where validation would have chosen them, the other
# rows and dislikes moved the held-out figures by about 2% either way, as much as two fits of one
# setting differ.
HYBRID_ROW = "alpha"


@dataclass(frozen=True)
class BlendGrid:
    """The values `choose_blend` searches: collaborative weights (relative to the spread of the
    scores), popularity weights and norm powers; each row needs at least one."""

    weights: tuple[float, ...] = BLEND_WEIGHTS
    popularity: tuple[float, ...] = BLEND_POPULARITY
    norm_powers: tuple[float, ...] = NORM_POWERS

    def __post_init__(self) -> None:
        empty = [f.name for f in fields(self) if not len(getattr(self, f.name))]
        if empty:
            raise ValueError(f"a BlendGrid needs at least one value in each row; {', '.join(empty)} has none")


BLEND_GRID = BlendGrid()


@dataclass(frozen=True)
class L2Choice:
    """The towers' L2 with the lowest validation RMSE, the RMSE per L2 tried, the model fitted at
    it (with its collaborative part) and the training encoding it was fitted on."""

    l2: float
    validation_rmse: dict[float, float]
    model: HybridRecommender
    encoded: TrainingEncoding


def choose_l2(model: HybridRecommender, train: pd.DataFrame, valid: pd.DataFrame, grid=L2_GRID,
              factors: tuple[np.ndarray, np.ndarray] | None = None) -> L2Choice:
    """Fit `model`'s settings on `train` at each towers' L2 of `grid` (the bias columns keep
    their own) and keep the one with the lowest validation RMSE.

    From the largest L2 down, stopping at the first that raises validation RMSE: a smaller L2
    fits the training ratings more closely, and past the best it only overfits more. The
    smaller the L2, the more sweeps the fit takes, so large data, which prefers a large L2, stops
    before the slow fits. The towers alone predict the ratings, so the collaborative part (which
    does not depend on L2) is fitted once, on the model kept. Each fit after the first starts
    from the previous one's item tower. The collaborative factors are computed meanwhile on one
    core (implicit's ALS releases the GIL), then attached to the model kept. The training frame
    is encoded once (`encode_training`) and the validation rows once, for every L2. `factors`:
    the collaborative factors of `train` if computed already (`HybridRecommender.fit`). Timings:
    docs/ml.md."""
    tried: dict[float, float] = {}
    best: HybridRecommender | None = None
    y = valid[model.spec.rating].astype(float).to_numpy()
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = (pool.submit(model.collaborative_factors, train, threads=1)
                   if model.settings.collaborative.factors and factors is None else None)
        encoded = model.encode_training(train)  # once for every L2: the rows, the encoders, the solver's sides
        valid_x = (encoded.user_encoder.transform(valid), encoded.item_encoder.transform(valid))
        for l2 in sorted(map(float, grid), reverse=True):
            candidate = model.with_settings(l2=l2).fit(
                train, collaborative=False, encoded=encoded, start=None if best is None else best.item_weights)
            tried[l2] = rmse(y, candidate.predict_encoded(*valid_x))
            if best is not None and tried[l2] >= tried[best.settings.l2]:
                break
            best = candidate  # only the best fit is kept
        best.fit_collaborative(train, factors=pending.result() if pending else factors, encoded=encoded)
    return L2Choice(best.settings.l2, tried, best, encoded)


class _ScoreParts:
    """A ranking score in parts, so that a grid over its weights costs products, not embeddings:
    score = base + collaborative weight * collaborative part + popularity weight * prior. `u` and
    `v`: user and item vectors whose columns before `base_end` make the base and from
    `collab_start` the collaborative part; `prior`: each item's. Each part is kept contiguous: a
    product with a column slice is not a BLAS call (5x slower at 110,000 items, measured here),
    and a grid makes hundreds of them."""

    def __init__(self, u: np.ndarray, v: np.ndarray, base_end: int, collab_start: int, prior: np.ndarray):
        self.user_base, self.user_collab = np.ascontiguousarray(u[:, :base_end]), np.ascontiguousarray(u[:, collab_start:])
        self.item_base = np.ascontiguousarray(v[:, :base_end].T)
        self.item_collab = np.ascontiguousarray(v[:, collab_start:].T)
        self.prior = prior

    def spreads(self) -> tuple[float, float]:
        """Standard deviations of the base and collaborative scores over the first users: CHUNK of
        them, or as many as make BLOCK_SCORES scores (at least 100; 152 at 110,000 items)."""
        users = max(100, min(CHUNK, BLOCK_SCORES // max(self.item_base.shape[1], 1)))
        return (float(np.std(self.user_base[:users] @ self.item_base)),
                float(np.std(self.user_collab[:users] @ self.item_collab)))

    def rows(self, collaborative: float, popularity: float):
        def score(lo: int, hi: int) -> np.ndarray:
            out = self.user_base[lo:hi] @ self.item_base
            out += popularity * self.prior
            if collaborative and self.item_collab.shape[0]:
                out += collaborative * (self.user_collab[lo:hi] @ self.item_collab)
            return out

        return score


class _WeightedScores(_ScoreParts):
    """The model's ranking score in parts (`_ScoreParts`), embedded once: the prior is
    log(1 + training ratings of the item). Equal, for each setting, to the model's own scores with
    those `RankingWeights`."""

    def __init__(self, model: HybridRecommender, users: pd.DataFrame, items: pd.DataFrame, norm_power: float):
        parts = RankingWeights(collaborative=1.0, popularity=0.0, norm_power=norm_power)
        k = model.tower_width + 2  # the collaborative dimensions follow the tower and the two biases
        super().__init__(model.user_embeddings(users, ranking=parts).astype(np.float64),
                         model.item_embeddings(items, ranking=parts).astype(np.float64), k, k,
                         model.popularity_prior(items, RankingWeights(popularity=1.0)))


def choose_popularity_weight(model: HybridRecommender, train: pd.DataFrame, valid: pd.DataFrame,
                             weights=POPULARITY_WEIGHTS, ranked: RankingInputs | None = None,
                             ) -> tuple[RankingWeights, dict[float, float]]:
    """The popularity weight with the best NDCG@10 on `valid` (never the test split), the model's
    other weights kept, and NDCG@10 per weight tried. While the best is the largest weight tried,
    the grid doubles (up to MAX_POPULARITY_WEIGHT), so the choice is never its edge by default.
    `ranked`: `validation_inputs(model.spec, train, valid)` if built already."""
    ranked = ranked or validation_inputs(model.spec, train, valid)
    scores = _WeightedScores(model, ranked.users, ranked.items, model.ranking.norm_power)
    tried: dict[float, float] = {}

    def best() -> float:
        return max(tried, key=lambda w: (tried[w], -w))

    pending = list(weights)
    while pending:
        ranked_by = rank_each({w: scores.rows(model.ranking.collaborative, w) for w in pending}, ranked)
        tried.update({w: r.ndcg for w, r in ranked_by.items()})
        top = max(tried)
        pending = [top * 2] if best() == top and 0 < top < MAX_POPULARITY_WEIGHT else []
    return RankingWeights(model.ranking.collaborative, best(), model.ranking.norm_power), tried


def choose_blend(model: HybridRecommender, train: pd.DataFrame, valid: pd.DataFrame,
                 grid: BlendGrid = BLEND_GRID, min_coverage: float = MIN_COVERAGE,
                 ranked: RankingInputs | None = None) -> tuple[RankingWeights, float, dict[str, dict[str, float]]]:
    """The ranking's three weights chosen together on `valid`: the collaborative part's weight,
    the popularity weight and the factors' norm power. The best NDCG@10 among the settings whose
    top-10 lists cover at least `min_coverage` of the catalog (the popularity prior and the factor
    norms buy NDCG with coverage), or the best NDCG if none does; ties go to the smaller weights.
    Relative weight 1.0: both parts' scores equally spread over the validation users.

    Each norm power and collaborative weight is a row of popularity weights, searched rather than
    ranked whole: `evaluation.climb` to the row's NDCG peak, then `_row_best` past a bar (114-127
    rankings instead of 242 at scales 10 and 100, 119 on MovieLens, and the whole grid's choice
    on every data set measured: docs/ml.md). The rows rank RANKING_THREADS at a time
    (`each_ranked`), and the bar is fixed between the two steps, so what is ranked does not
    depend on which thread finishes first. Returns the weights, the collaborative weight relative
    to that unit, and NDCG@10 and coverage per setting ranked (with its norm power; the chosen one
    also has `"chosen": True`). `grid`: the values searched; `ranked`: as
    `choose_popularity_weight` takes it."""
    ranked = ranked or validation_inputs(model.spec, train, valid)
    ws = sorted(grid.popularity)
    rows = []
    for power in grid.norm_powers:
        scores = _WeightedScores(model, ranked.users, ranked.items, power)
        base, collaborative = scores.spreads()
        unit = base / (collaborative or 1.0)  # collaborative_unit, from the scores built here anyway
        # Without the collaborative part (c = 0) the norm changes nothing: once, at power 0.
        rows += [_BlendRow(scores, c, unit, power, ws, min_coverage, ranked) for c in grid.weights if c or not power]
    peaks = each_ranked(lambda row: climb(lambda i: row.key(i)[1], len(ws), len(ws) // 2), rows, ranked)
    bar = max((key[1] for row, i in zip(rows, peaks) if (key := row.key(i))[0]), default=-np.inf)
    chosen = each_ranked(lambda row_peak: _row_best(row_peak[0].key, len(ws), row_peak[1], bar),
                         list(zip(rows, peaks)), ranked)
    row, at = max(zip(rows, chosen), key=lambda row_at: row_at[0].key(row_at[1]))
    row.figures[at]["chosen"] = True
    tried = {each.name(i): each.figures[i] for each in rows for i in sorted(each.figures)}
    return (RankingWeights(collaborative=row.c * row.unit, popularity=ws[at], norm_power=row.power), row.c, tried)


class _BlendRow:
    """One norm power and collaborative weight of `choose_blend`, across the popularity weights
    `ws`: `key(i)` ranks the validation users at the i-th (once; its NDCG@10, coverage and norm
    power kept in `figures`) and returns what `choose_blend` maximizes, (meets the coverage
    floor, NDCG@10, then the smaller weights)."""

    def __init__(self, scores: _WeightedScores, c: float, unit: float, power: float, ws: list[float],
                 min_coverage: float, ranked: RankingInputs):
        self.scores, self.c, self.unit, self.power, self.ws = scores, c, unit, power, ws
        self.min_coverage, self.ranked = min_coverage, ranked
        self.figures: dict[int, dict[str, float]] = {}

    def key(self, i: int) -> tuple:
        if i not in self.figures:
            r = self.ranked.rank(self.scores.rows(self.c * self.unit, self.ws[i]))
            self.figures[i] = {"ndcg": r.ndcg, "coverage": self.ranked.coverage(r), "norm_power": self.power}
        return (*_judged(self.figures[i], self.min_coverage), -self.c, -self.ws[i], -self.power)

    def name(self, i: int) -> str:
        return f"collaborative={self.c} popularity={self.ws[i]} norm_power={self.power}"


def _judged(figures: dict, min_coverage: float) -> tuple[bool, float]:
    """How a ranking's validation figures rank against another's: lists that meet the coverage
    floor first, then NDCG@10 (`choose_blend`'s settings, `choose_collaborative`'s parts)."""
    return figures["coverage"] >= min_coverage, figures["ndcg"]


def _row_best(key, n: int, peak: int, bar: float) -> int:
    """The row's best setting by `key(i)` (meets the coverage floor, NDCG@10, ...), given its
    NDCG peak: the peak if its lists meet the floor; else the better of the nearest settings on
    either side that meet it, each side's walk ending once two settings in a row fall below
    `bar` (the best NDCG at the floor over every row's peak). Away from the peak NDCG falls, so
    nothing further that way could be chosen; two settings, not one, because validation NDCG is
    noisy (in collaborative scale 10's cold-start model one setting below the bar, 0.3414, hid
    the best, 0.3456). None met: the peak (chosen only if no setting anywhere meets the floor,
    as the row's best NDCG)."""
    found = [peak]
    if not key(peak)[0] and key(peak)[1] >= bar:
        for step in (-1, 1):
            i = peak + step
            while 0 <= i < n and any(0 <= j < n and key(j)[1] >= bar for j in (i, i + step)):
                if key(i)[0]:
                    found.append(i)
                    break
                i += step
    return max(found, key=key)


def choose_new_user_weights(model: HybridRecommender, weights: RankingWeights, ranked: RankingInputs,
                            collaborative=NEW_USER_COLLABORATIVE, prior=NEW_USER_PRIOR,
                            ) -> tuple[RankingWeights, dict[str, float]]:
    """The new-user weights of a model whose other ranking `weights` are chosen: the validation
    users (`ranked`) embedded from their features alone, as a customer never seen would be, and
    ranked over the catalog for NDCG@10 at each `collaborative` multiple x `prior` weight (no
    coverage floor: these lists are few). Ties go to the unchanged weights (1, 1), then to the
    smaller. Returns `weights` with the chosen pair, and NDCG@10 per pair tried."""
    width = model.tower_width
    users = ranked.users.assign(**{model.spec.user_id: None})
    u = model.user_embeddings(users, ranking=replace(weights, collaborative=1.0, new_user_collaborative=1.0,
                                                     new_user_prior=1.0)).astype(np.float64)
    v = model.item_embeddings(ranked.items, ranking=weights).astype(np.float64)
    # The item vector's prior column (the user's third coordinate multiplies it) is the prior part.
    scores = _ScoreParts(u, v, width + 1, width + 2, v[:, width + 1].copy())
    pairs = [(multiple, beta) for multiple in (collaborative if weights.collaborative else (1.0,)) for beta in prior]
    ranked_by = rank_each({(multiple, beta): scores.rows(multiple * weights.collaborative, beta)
                           for multiple, beta in pairs}, ranked)
    tried = {f"collaborative={multiple:g}x prior={beta:g}": r.ndcg for (multiple, beta), r in ranked_by.items()}
    results = [(r.ndcg, pair == (1.0, 1.0), -pair[0], -pair[1]) for pair, r in ranked_by.items()]
    _, _, multiple, beta = max(results)
    return replace(weights, new_user_collaborative=-multiple, new_user_prior=-beta), tried


def collaborative_unit(model: HybridRecommender, users: pd.DataFrame, items: pd.DataFrame, norm_power: float) -> float:
    """The collaborative weight that spreads the collaborative scores as widely as the base
    scores over `users` x `items` (`choose_blend`'s weights are multiples of it)."""
    base, collaborative = _WeightedScores(model, users, items, norm_power).spreads()
    return base / (collaborative or 1.0)


@dataclass(frozen=True)
class RankingChoice:
    """The ranking weights chosen on validation, the collaborative one also relative to the
    spread of the scores (`collaborative_unit`: what carries over to a refit), the validation
    users and items they were chosen on, and the grid each was chosen from (one is empty: the
    hybrid chooses its three weights together, the towers alone their popularity weight)."""

    weights: RankingWeights
    relative_collaborative: float
    ranked: RankingInputs
    popularity_ndcg_by_weight: dict[float, float]
    blend_by_setting: dict[str, dict]  # NDCG@10, coverage and norm power per setting
    new_user_ndcg: dict[str, float]  # validation users as new ones, per new-user weights


def choose_ranking(model: HybridRecommender, train: pd.DataFrame, valid: pd.DataFrame,
                   min_coverage: float = MIN_COVERAGE, ranked: RankingInputs | None = None,
                   blend: tuple | None = None, grid: BlendGrid = BLEND_GRID) -> RankingChoice:
    """The ranking weights of a fitted model on `valid`: a known user's, then a new user's
    (`choose_new_user_weights`). The model is left as it was. `ranked`: `validation_inputs(spec,
    train, valid)` if built already; `blend`: what `choose_blend` returned for this model, if it
    ran already (`choose_collaborative` ranks every model it tries); `grid`: what `choose_blend`
    searches."""
    ranked = ranked or validation_inputs(model.spec, train, valid)
    blend_tried, tried, relative = {}, {}, 0.0
    if model.settings.collaborative.factors:
        weights, relative, blend_tried = blend or choose_blend(model, train, valid, grid, min_coverage=min_coverage,
                                                               ranked=ranked)
    else:
        weights, tried = choose_popularity_weight(model, train, valid, ranked=ranked)
    weights, new_user = choose_new_user_weights(model, weights, ranked)
    return RankingChoice(weights, relative, ranked, tried, blend_tried, new_user)


@dataclass(frozen=True)
class CollaborativeChoice:
    """The hybrid with the collaborative part whose ranking is best on validation, what
    `choose_blend` chose for it, and per setting tried the validation NDCG@10 and coverage of the
    ranking weights chosen for it (`"chosen": True` on the one kept; searched at the start's norm
    power, except the start's and the one kept: `choose_collaborative`)."""

    model: HybridRecommender
    blend: tuple[RankingWeights, float, dict[str, dict[str, float]]]
    by_setting: dict[str, dict]


def choose_collaborative(model: HybridRecommender, train: pd.DataFrame, valid: pd.DataFrame,
                         encoded: TrainingEncoding, min_coverage: float, ranked: RankingInputs,
                         values: Iterable[float], grid: BlendGrid = BLEND_GRID) -> CollaborativeChoice:
    """The collaborative part of a fitted hybrid, its HYBRID_ROW searched again for the hybrid:
    from its setting (the ALS search's choice, added to `values` if not among them), the row's
    values climbed one value at a time (the row had one peak on the five data sets of
    docs/ml.md), each value judged as `choose_blend` ranks with it: its lists meet `min_coverage`
    on validation, then NDCG@10; ties keep the start. The towers stay as fitted (`encoded` is
    their encoding; `HybridRecommender.with_collaborative`), so a value costs one ALS fit and one
    search of the ranking weights. The start's search is the whole `choose_blend`; the others
    search only the norm power the start chose (a third of the rankings), and the value kept, if
    not the start, is searched whole again. `ranked`: the validation users, as `choose_blend`
    takes them; `grid`: what it searches."""
    start = model.settings.collaborative
    values = sorted(set(values) | {getattr(start, HYBRID_ROW)})
    figures: dict[str, dict] = {}

    def judged(candidate: HybridRecommender, blend: tuple) -> tuple:
        chosen = next(v for v in blend[2].values() if v.get("chosen"))
        figures[setting_name(als_setting(candidate.settings.collaborative))] = {
            "ndcg": chosen["ndcg"], "coverage": chosen["coverage"]}
        return candidate, blend, _judged(chosen, min_coverage)

    at = values.index(getattr(start, HYBRID_ROW))
    # per value's index: the model, its blend and how it ranks
    tried = {at: judged(model, choose_blend(model, train, valid, grid, min_coverage=min_coverage, ranked=ranked))}
    power = tried[at][1][0].norm_power

    def score(i: int) -> tuple[bool, float]:
        if i not in tried:
            candidate = model.with_collaborative(replace(start, **{HYBRID_ROW: values[i]}), encoded)
            tried[i] = judged(candidate, choose_blend(candidate, train, valid, replace(grid, norm_powers=(power,)),
                                                      min_coverage=min_coverage, ranked=ranked))
        return tried[i][2]

    best = climb(score, len(values), at, ahead=1)
    kept, blend, _ = tried[best]
    if best != at:  # searched at one norm power: search it whole, as the start was
        kept, blend, _ = judged(kept, choose_blend(kept, train, valid, grid, min_coverage=min_coverage, ranked=ranked))
    figures[setting_name(als_setting(kept.settings.collaborative))]["chosen"] = True
    return CollaborativeChoice(kept, blend, figures)


def carry_weights(weights: RankingWeights, relative_collaborative: float, model: HybridRecommender,
                  users: pd.DataFrame, items: pd.DataFrame) -> RankingWeights:
    """Ranking weights chosen for one fit, for another fit of the same settings (on more data, or
    on new data): the collaborative weight was chosen relative to the spread of the base and the
    collaborative scores (`choose_blend`), and ALS factors fitted on other ratings are spread
    differently, so it keeps that relative size (`collaborative_unit` of `model` over `users` and
    `items`); the popularity weight and the norm power are kept as they are."""
    if not relative_collaborative:
        return replace(weights, collaborative=0.0)
    unit = collaborative_unit(model, users, items, weights.norm_power)
    return replace(weights, collaborative=relative_collaborative * unit)
