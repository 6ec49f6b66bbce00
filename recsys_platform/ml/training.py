"""The one training call: a ratings table and its spec in, a tuned model and its evaluation out.

`train_recommender` is what the `recommender_model` asset, the benchmarks and the docs call:

1. split the ratings into train / validation / test (seeded, `evaluation.split`);
2. choose every setting on validation, never on test: the collaborative part's ALS settings
   over a wide grid (the same search tunes the ALS baseline: `evaluation.tune_als`), the towers'
   L2 on RMSE (`tuning.choose_l2`), the three ranking weights on NDCG@10 at a coverage floor
   (`tuning.choose_ranking`);
3. evaluate that model, fitted on the training split, on the test split beside the baselines
   (global mean, biases, popularity, tuned ALS, tuned EASE);
4. refit at the chosen settings on every rating (train, validation and test) and return that
   model: what a deployment publishes. Its quality is the one measured in 3, on less data.

Example (MovieLens 100K, a film data set with a flag and a list of genres; docs/ml.md):

    >>> from recsys_platform.ml.datasets import MOVIELENS_SPEC, movielens_100k
    >>> run = train_recommender(movielens_100k(), MOVIELENS_SPEC)
    >>> run.metrics["ndcg@10"], run.metrics["ndcg@10_als"], run.metrics["rmse"]
    >>> run.model.user_embeddings(users), run.model.item_embeddings(items)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import pandas as pd

from recsys_platform.ml.collaborative import CollaborativeSettings
from recsys_platform.ml.evaluation import (
    ALS_GRID,
    EASE_MAX_ITEMS,
    ALSBaseline,
    evaluate,
    ranking_inputs,
    ranking_metrics,
    setting_name,
    split,
    tune_als,
    tune_ease,
)
from recsys_platform.ml.hybrid import HybridRecommender, HybridSettings
from recsys_platform.ml.spec import RecommenderSpec
from recsys_platform.ml.tuning import (
    L2_GRID,
    MIN_COVERAGE,
    carry_weights,
    choose_l2,
    choose_ranking,
)

# The hybrid as trained by default: 16 collaborative factors to start the search from, 14 tower dimensions.
DEFAULT_SETTINGS = HybridSettings(dim=32, collaborative=CollaborativeSettings(factors=16))
# Past this many training ratings the ALS search runs on a seeded sample of users holding about
# this many (the chosen setting is then fitted on all of them): each setting is a whole ALS fit.
TUNING_MAX_RATINGS = 300_000


@dataclass
class TrainingRun:
    """What `train_recommender` made: `model` (refit on every rating at the chosen settings, or
    the evaluated model without refit), `evaluated` (fitted on `train`; `metrics` are its, on
    `test`), the splits, and every setting's validation figure."""

    model: HybridRecommender
    evaluated: HybridRecommender
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    metrics: dict
    popularity_ndcg_by_weight: dict[float, float] = field(default_factory=dict)
    als_ndcg_by_setting: dict[str, float] = field(default_factory=dict)
    ease_ndcg_by_l2: dict[str, float] = field(default_factory=dict)
    blend_ndcg_by_weight: dict[str, dict] = field(default_factory=dict)  # NDCG@10, coverage, norm power per setting


def _tuning_sample(spec: RecommenderSpec, train: pd.DataFrame, valid: pd.DataFrame, max_ratings: int, seed: int):
    """`train` and `valid` limited to a seeded sample of users with about `max_ratings` training ratings."""
    if len(train) <= max_ratings:
        return train, valid
    users = train[spec.user_id].drop_duplicates().sample(frac=1.0, random_state=seed)
    counts = train[spec.user_id].value_counts().reindex(users).cumsum()
    kept = set(counts.index[counts <= max_ratings])
    return train[train[spec.user_id].isin(kept)], valid[valid[spec.user_id].isin(kept)]


def train_recommender(frame: pd.DataFrame, spec: RecommenderSpec, settings: HybridSettings = DEFAULT_SETTINGS, *,
                      test_share: float = 0.2, valid_share: float = 0.1, seed: int = 0,
                      l2_grid=L2_GRID, collaborative_grid: dict | None = ALS_GRID, min_coverage: float | None = None,
                      baselines: bool = True, refit: bool = True, extra_train: pd.DataFrame | None = None,
                      tuning_max_ratings: int = TUNING_MAX_RATINGS, ease_max_items: int = EASE_MAX_ITEMS) -> TrainingRun:
    """Train the hybrid on `frame` (columns of `spec`) with every setting chosen on validation,
    evaluate it on a held-out split against the baselines, and refit it on every rating.

    `settings`: the model's shape and the start of the search. `min_coverage`: the ranking
    weights are chosen for NDCG@10 among the settings whose top-10 lists cover at least this
    share of the catalog on validation; None: the coverage the tuned ALS baseline reached there,
    at most MIN_COVERAGE (20%): never narrower lists than the baseline's, never a floor that
    costs more NDCG than the baseline's own lists do. `l2_grid`: the towers' L2 values
    to try (None: `settings.l2` as it is). `collaborative_grid`: the ALS settings to search (None:
    `settings.collaborative` as it is; no search either without collaborative factors); the
    vectors' dimension follows the factors chosen, the towers keep their width. `baselines`:
    also score tuned ALS and EASE (up to `ease_max_items` items) on the test split. `refit`: return the model refit on every
    rating (False: the evaluated one). `extra_train`: rows with (at least) the spec's columns
    that join the training split only, e.g. implied ratings of the stream's interactions
    (`feedback.training`), so validation and test stay `frame`'s."""
    rest, test = split(frame, test_share, seed)
    train, valid = split(rest, valid_share / (1 - test_share), seed + 1)
    if extra_train is not None and len(extra_train):
        # A pair held out for validation or test stays held out: its implied rating would leak it.
        held = pd.MultiIndex.from_frame(pd.concat([valid, test])[[spec.user_id, spec.item_id]])
        kept = ~pd.MultiIndex.from_frame(extra_train[[spec.user_id, spec.item_id]]).isin(held)
        train = pd.concat([train, extra_train.loc[kept].reindex(columns=frame.columns)], ignore_index=True)
    metrics: dict = {}
    als, als_tried = None, {}
    if collaborative_grid and (settings.collaborative.factors or baselines):
        sample_train, sample_valid = _tuning_sample(spec, train, valid, tuning_max_ratings, seed)
        als, als_tried = tune_als(spec, sample_train, sample_valid, collaborative_grid, seed=settings.seed)
        if len(sample_train) < len(train):
            coverage = als.validation_coverage
            als = ALSBaseline(spec, seed=settings.seed, validation_coverage=coverage, **als.setting).fit(train)
            metrics["als_tuning_ratings"] = len(sample_train)
        if settings.collaborative.factors:
            tuned = replace(settings.collaborative, **als.setting)
            settings = replace(settings, dim=settings.tower_width + 2 + tuned.factors, collaborative=tuned)
    elif baselines:
        als = ALSBaseline(spec, seed=settings.seed, **_als_setting(settings.collaborative)).fit(train)
    model = HybridRecommender(spec, settings)
    l2_tried: dict[float, float] = {}
    if l2_grid:
        choice = choose_l2(model, train, valid, l2_grid)
        model, l2_tried = choice.model, choice.validation_rmse
    else:
        model.fit(train)
    if min_coverage is None:
        baseline = None if als is None else als.validation_coverage  # None: no search ran
        min_coverage = MIN_COVERAGE if baseline is None else min(MIN_COVERAGE, baseline)
    metrics["coverage_floor"] = min_coverage
    ranking = choose_ranking(model, train, valid, min_coverage)
    model.ranking = ranking.weights
    metrics.update(evaluate(model, train, test, valid))
    metrics.update(_settings_metrics(model))
    if l2_tried:
        metrics["validation_rmse_by_l2"] = {str(k): round(v, 4) for k, v in l2_tried.items()}
    ease_tried: dict[str, float] = {}
    if baselines:
        for name, value in ranking_metrics(spec, als.score_rows, train, test, valid).items():
            metrics[f"{name}_als"] = value
        metrics["als_params"] = setting_name(als.setting)
        ease, ease_tried = tune_ease(spec, train, valid, max_items=ease_max_items)
        if ease is not None:
            for name, value in ranking_metrics(spec, ease.score_rows, train, test, valid).items():
                metrics[f"{name}_ease"] = value
            metrics["ease_l2"] = ease.l2
    published = model
    if refit:
        everything = pd.concat([train, valid, test], ignore_index=True)
        published = model.with_settings().fit(everything, start_from=model)  # from the evaluated towers
        users, items, _, _ = ranking_inputs(spec, train, valid)
        published.ranking = carry_weights(model.ranking, model, published, users, items)
        metrics["published_ratings"] = len(everything)
    else:
        metrics["published_ratings"] = len(train)
    metrics["published_model"] = (  # the manifest says both: what was measured, and what is published
        f"{'refit on every rating' if refit else 'the evaluated model'} ({metrics['published_ratings']} ratings) "
        f"at the settings chosen on validation; the metrics are the model fitted on the {len(train)} training "
        f"ratings, judged on the {len(test)} held out")
    return TrainingRun(published, model, train, valid, test, metrics, ranking.popularity_ndcg_by_weight, als_tried,
                       ease_tried, ranking.blend_by_setting)


def _als_setting(c: CollaborativeSettings) -> dict:
    """The ALS baseline at the collaborative part's own settings (no search asked for)."""
    return {"factors": c.factors or ALSBaseline.factors, "regularization": c.regularization, "alpha": c.alpha,
            "iterations": c.iterations}


def _settings_metrics(model: HybridRecommender) -> dict:
    """The settings the model was trained with, under the metadata's names."""
    s, c = model.settings, model.settings.collaborative
    out = {"popularity_weight": model.ranking.popularity, "training_iterations": model.iterations,
           "training_converged": model.converged, "l2": s.l2, "dim": s.dim}
    if c.factors:
        out.update({"als_weight": model.ranking.collaborative, "als_norm_power": model.ranking.norm_power,
                    "collaborative": setting_name({"factors": c.factors, "regularization": c.regularization,
                                                   "alpha": c.alpha, "iterations": c.iterations})})
    return out
