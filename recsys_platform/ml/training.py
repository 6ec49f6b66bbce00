"""Training the hybrid as the `recommender_model` asset does: split, fit, choose, evaluate."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from recsys_platform.ml.evaluation import evaluate, ranking_metrics, split, tune_als
from recsys_platform.ml.hybrid import HybridRecommender
from recsys_platform.ml.tuning import MIN_COVERAGE, choose_l2, choose_ranking


@dataclass
class TrainingRun:
    model: HybridRecommender
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    metrics: dict
    popularity_ndcg_by_weight: dict[float, float]
    als_ndcg_by_setting: dict[str, float]
    blend_ndcg_by_weight: dict[str, dict]  # NDCG@10, coverage and norm power on validation per setting


def train_and_evaluate(frame: pd.DataFrame, model: HybridRecommender, test_share: float = 0.2,
                       valid_share: float = 0.1, seed: int = 0, als: bool = True,
                       min_coverage: float = MIN_COVERAGE, l2_grid=None,
                       extra_train: pd.DataFrame | None = None) -> TrainingRun:
    """Split train/valid/test, fit `model`'s settings on train (with `l2_grid`: once per L2,
    keeping the lowest validation RMSE), choose the ranking weights on valid, score on test; with
    `als`, implicit ALS tuned on the same validation split is scored on the same test.
    `extra_train`: rows of (at least the spec's) columns of `frame` that join the training split only (implied ratings
    of the stream's interactions, `feedback.training`), so validation and test stay `frame`'s."""
    rest, test = split(frame, test_share, seed)
    train, valid = split(rest, valid_share / (1 - test_share), seed + 1)
    if extra_train is not None and len(extra_train):
        # A pair held out for validation or test stays held out: its implied rating would leak it.
        s = model.spec
        held = pd.MultiIndex.from_frame(pd.concat([valid, test])[[s.user_id, s.item_id]])
        kept = ~pd.MultiIndex.from_frame(extra_train[[s.user_id, s.item_id]]).isin(held)
        train = pd.concat([train, extra_train.loc[kept].reindex(columns=frame.columns)], ignore_index=True)
    l2_tried: dict[float, float] = {}
    if l2_grid:
        choice = choose_l2(model, train, valid, l2_grid)
        model, l2_tried = choice.model, choice.validation_rmse
    else:
        model.fit(train)
    ranking = choose_ranking(model, train, valid, min_coverage)
    model.ranking = ranking.weights
    metrics = evaluate(model, train, test, valid)
    metrics["popularity_weight"] = model.ranking.popularity
    if model.settings.collaborative.factors:
        metrics["als_weight"] = model.ranking.collaborative
        metrics["als_norm_power"] = model.ranking.norm_power
    metrics["training_iterations"] = model.iterations
    metrics["training_converged"] = model.converged
    metrics["l2"] = model.settings.l2
    if l2_tried:
        metrics["validation_rmse_by_l2"] = {str(k): round(v, 4) for k, v in l2_tried.items()}
    als_tried: dict[str, float] = {}
    if als:
        best, als_tried = tune_als(model.spec, train, valid)
        for name, value in ranking_metrics(model.spec, best.score_rows, train, test, valid).items():
            metrics[f"{name}_als"] = value
        metrics["als_params"] = f"factors={best.factors} regularization={best.regularization} alpha={best.alpha}"
    return TrainingRun(model, train, valid, test, metrics, ranking.popularity_ndcg_by_weight, als_tried,
                       ranking.blend_by_setting)
