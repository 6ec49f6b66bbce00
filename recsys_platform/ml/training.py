"""The one training call: a ratings table and its spec in, a tuned model and its evaluation out.

`train_recommender` is what the `recommender_model` asset, the benchmarks and the docs call:

1. split the ratings into train / validation / test (seeded, `evaluation.split`);
2. choose every setting on validation, never on test: the collaborative part's ALS settings
   over a wide grid (the same search tunes the ALS baseline: `evaluation.tune_als`), the towers'
   L2 on RMSE (`tuning.choose_l2`), the part's alpha again on the hybrid's own ranking
   (`tuning.choose_collaborative`), the three ranking weights on NDCG@10 at a coverage floor
   (`tuning.choose_ranking`);
3. evaluate that model, fitted on the training split, on the test split beside the baselines
   (global mean, biases, popularity, tuned ALS, tuned EASE);
4. refit at the chosen settings on every rating (train, validation and test) and return that
   model: what a deployment publishes. Its quality is the one measured in 3, on less data.

Step 2 is most of the time on large data (scale 1000: minutes, docs/ml.md). Its choices are
returned as a `Tuned` record, which the manifest keeps: given the last one (`previous`), a
training on about as many ratings, shaped and searched the same way, refits at those settings
instead of searching again (`Tuned.reusable`), and the metrics say which it did (`tuning`).

Example (MovieLens 100K, a film data set with a flag and a list of genres; docs/ml.md):

    >>> from recsys_platform.ml.datasets import MOVIELENS_SPEC, movielens_100k
    >>> run = train_recommender(movielens_100k(), MOVIELENS_SPEC)
    >>> run.metrics["ndcg@10"], run.metrics["ndcg@10_als"], run.metrics["rmse"]
    >>> run.model.user_embeddings(users), run.model.item_embeddings(items)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import asdict, dataclass, field, fields, replace

import pandas as pd

from recsys_platform.ml.collaborative import CollaborativeSettings
from recsys_platform.ml.evaluation import (
    ALS_GRID,
    ALS_START,
    EASE_MAX_ITEMS,
    ALSBaseline,
    ALSSearch,
    RankingInputs,
    als_setting,
    evaluate,
    ranking_inputs,
    ranking_metrics,
    setting_name,
    split,
    tune_als,
    tune_ease,
    validation_inputs,
)
from recsys_platform.ml.hybrid import HybridRecommender, HybridSettings
from recsys_platform.ml.published import RankingWeights
from recsys_platform.ml.spec import RecommenderSpec
from recsys_platform.ml.tuning import (
    BLEND_GRID,
    HYBRID_ROW,
    L2_GRID,
    MIN_COVERAGE,
    BlendGrid,
    carry_weights,
    choose_collaborative,
    choose_l2,
    choose_ranking,
)

# The hybrid as trained by default: 16 collaborative factors to start the search from, 14 tower dimensions.
DEFAULT_SETTINGS = HybridSettings(dim=32, collaborative=CollaborativeSettings(factors=16))
# Past this many training ratings the ALS search runs on a seeded sample of users holding about
# this many (the chosen setting is then fitted on all of them): each setting is a whole ALS fit.
TUNING_MAX_RATINGS = 300_000
# A search's choices are reused while the training split holds within this share of the ratings
# it was searched on (more or fewer) and the search is at most RETUNE_DAYS old; past either, the
# settings are searched again (data drifts in what it holds, not only in how much).
RETUNE_SHARE = 0.25
RETUNE_DAYS = 7.0


@dataclass(frozen=True)
class Tuned:
    """What a search chose on validation, as the manifest's metrics keep it (`metrics["tuned"]`):
    the ALS baseline's setting ({} without one), the collaborative part's (the same, or another
    alpha chosen for the hybrid: `tuning.choose_collaborative`; {} without factors), the towers'
    L2, the ranking weights (the collaborative one relative to the spread of the scores,
    so it carries to a new fit: `tuning.carry_weights`; a new user's too), the coverage floor it
    chose at, how many training ratings the search saw and when, and `basis`: a digest of what
    the search depended on (the spec, the starting settings, the grids and the floor asked for)."""

    basis: str
    train_ratings: int
    als: dict
    collaborative: dict
    l2: float
    relative_collaborative: float
    popularity: float
    norm_power: float
    new_user_collaborative: float
    new_user_prior: float
    coverage_floor: float
    searched_on: str  # when (ISO 8601, UTC)
    searched_at: str = ""  # the version (or run) that searched, as the reader names it

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data, searched_at: str = "") -> Tuned | None:
        """The record in a manifest's metrics, or None if it has none or one of another shape;
        `searched_at`: the version it was read from, unless the record names an earlier search."""
        names = {f.name for f in fields(cls)}
        if not isinstance(data, dict) or not names - {"searched_at"} <= set(data):
            return None
        try:
            dt.datetime.fromisoformat(data["searched_on"])
        except (TypeError, ValueError):
            return None  # a damaged record: search again rather than fail the training
        return cls(**{**{k: v for k, v in data.items() if k in names},
                      "searched_at": data.get("searched_at") or searched_at})

    def reusable(self, basis: str, train_ratings: int, share: float = RETUNE_SHARE, days: float = RETUNE_DAYS,
                 now: dt.datetime | None = None) -> bool:
        """Whether a training of `train_ratings` ratings on the same `basis` may reuse these
        choices at `now` (never with `share` or `days` 0)."""
        age = (now or dt.datetime.now(dt.timezone.utc)) - dt.datetime.fromisoformat(self.searched_on)
        return (share > 0 and self.basis == basis and abs(train_ratings - self.train_ratings) <= share * self.train_ratings
                and dt.timedelta(0) <= age <= dt.timedelta(days=days))


def search_basis(spec: RecommenderSpec, settings: HybridSettings, l2_grid, collaborative_grid,
                 min_coverage: float | None, blend_grid: BlendGrid = BLEND_GRID) -> str:
    """A digest of what a search's choices depend on, besides the data."""
    described = {"spec": asdict(spec), "settings": asdict(settings), "l2_grid": list(l2_grid or []),
                 "collaborative_grid": collaborative_grid or {}, "min_coverage": min_coverage,
                 "blend_grid": asdict(blend_grid)}
    return hashlib.sha256(json.dumps(described, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class TrainingRun:
    """What `train_recommender` made: `model` (refit on every rating at the chosen settings, or
    the evaluated model without refit), `evaluated` (fitted on `train`; `metrics` are its, on
    `test`), the splits, what was chosen (`tuned`) and every setting's validation figure (empty
    when `tuned` was reused)."""

    model: HybridRecommender
    evaluated: HybridRecommender
    train: pd.DataFrame
    valid: pd.DataFrame
    test: pd.DataFrame
    metrics: dict
    tuned: Tuned
    popularity_ndcg_by_weight: dict[float, float] = field(default_factory=dict)
    als_ndcg_by_setting: dict[str, float] = field(default_factory=dict)
    ease_ndcg_by_l2: dict[str, float] = field(default_factory=dict)
    blend_ndcg_by_weight: dict[str, dict] = field(default_factory=dict)  # NDCG@10, coverage, norm power per setting
    new_user_ndcg: dict[str, float] = field(default_factory=dict)  # validation users as new ones, per weights
    # the hybrid's validation NDCG@10 and coverage per collaborative setting (`tuning.choose_collaborative`)
    collaborative_by_setting: dict[str, dict] = field(default_factory=dict)


def user_sample(spec: RecommenderSpec, frame: pd.DataFrame, max_ratings: int, seed: int) -> pd.DataFrame:
    """`frame` limited to a seeded sample of its users holding about `max_ratings` ratings (all of
    it if it holds no more): whole users, so each keeps its history."""
    if len(frame) <= max_ratings:
        return frame
    users = frame[spec.user_id].drop_duplicates().sample(frac=1.0, random_state=seed)
    counts = frame[spec.user_id].value_counts().reindex(users).cumsum()
    return frame[frame[spec.user_id].isin(set(counts.index[counts <= max_ratings]))]


def search_als(spec: RecommenderSpec, train: pd.DataFrame, valid: pd.DataFrame, grid: dict = ALS_GRID,
               start: dict = ALS_START, seed: int = 0, sample_seed: int = 0, max_ratings: int = TUNING_MAX_RATINGS,
               ranked: RankingInputs | None = None) -> ALSSearch:
    """`tune_als` over `grid` from `start`, on a sample of `train`'s users holding about
    `max_ratings` ratings (`user_sample`, seeded by `sample_seed`) and their validation ratings;
    its `model` is the chosen setting fitted on the whole of `train`. `ranked`: the whole
    validation split's `validation_inputs`, if built already (used only when nothing is sampled)."""
    sample_train = user_sample(spec, train, max_ratings, sample_seed)
    if len(sample_train) == len(train):
        return tune_als(spec, train, valid, grid, start, seed=seed, ranked=ranked)
    sample_valid = valid[valid[spec.user_id].isin(sample_train[spec.user_id])]
    search = tune_als(spec, sample_train, sample_valid, grid, start, seed=seed)
    return search._replace(model=ALSBaseline(spec, search.model.settings, seed).fit(train))


def _splits(frame: pd.DataFrame, spec: RecommenderSpec, test_share: float, valid_share: float, seed: int,
            extra_train: pd.DataFrame | None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Train, validation and test splits of `frame`, `extra_train` joining the training split."""
    rest, test = split(frame, test_share, seed)
    train, valid = split(rest, valid_share / (1 - test_share), seed + 1)
    if extra_train is not None and len(extra_train):
        # A pair held out for validation or test stays held out: its implied rating would leak it.
        held = pd.MultiIndex.from_frame(pd.concat([valid, test])[[spec.user_id, spec.item_id]])
        kept = ~pd.MultiIndex.from_frame(extra_train[[spec.user_id, spec.item_id]]).isin(held)
        train = pd.concat([train, extra_train.loc[kept].reindex(columns=frame.columns)], ignore_index=True)
    return train, valid, test


def train_recommender(frame: pd.DataFrame, spec: RecommenderSpec, settings: HybridSettings = DEFAULT_SETTINGS, *,
                      test_share: float = 0.2, valid_share: float = 0.1, seed: int = 0,
                      l2_grid=L2_GRID, collaborative_grid: dict | None = ALS_GRID, min_coverage: float | None = None,
                      blend_grid: BlendGrid = BLEND_GRID,
                      baselines: bool = True, refit: bool = True, extra_train: pd.DataFrame | None = None,
                      tuning_max_ratings: int = TUNING_MAX_RATINGS, ease_max_items: int = EASE_MAX_ITEMS,
                      previous: Tuned | None = None, retune_share: float = RETUNE_SHARE,
                      retune_days: float = RETUNE_DAYS) -> TrainingRun:
    """Train the hybrid on `frame` (columns of `spec`) with every setting chosen on validation,
    evaluate it on a held-out split against the baselines, and refit it on every rating.

    `settings`: the model's shape and the start of the search. `min_coverage`: the ranking weights
    are chosen for NDCG@10 among the settings whose top-10 lists cover at least this share of the
    catalog on validation; None: the coverage the tuned ALS baseline reached there (MIN_COVERAGE,
    20%, when no ALS search runs): never narrower lists than the baseline's, as the comparison with
    it asks, and never a floor that costs more NDCG than the baseline's own lists do. `l2_grid`: the
    towers' L2 values to try (None: `settings.l2` as it is). `collaborative_grid`: the ALS settings
    to search (None: `settings.collaborative` as it is; no search either without collaborative
    factors); the vectors' dimension follows the factors chosen, the towers keep their width.
    `blend_grid`: the collaborative weights, popularity weights and norm powers the ranking's search
    tries (`tuning.BlendGrid`). `baselines`: also score tuned ALS and EASE (up to `ease_max_items`
    items) on the test split. `refit`: return the model refit on every rating (False: the evaluated
    one). `extra_train`: rows with (at least) the spec's columns that join the training split only,
    e.g. implied ratings of the stream's interactions (`feedback.training`), so validation and test
    stay `frame`'s. `previous`: the last search's `Tuned` record; it is reused instead of searching
    when `Tuned.reusable` (same basis, a training split within `retune_share` of its size, a search
    at most `retune_days` old; either 0: search every time)."""
    train, valid, test = _splits(frame, spec, test_share, valid_share, seed, extra_train)
    basis = search_basis(spec, settings, l2_grid, collaborative_grid, min_coverage, blend_grid)
    if previous is not None and previous.reusable(basis, len(train), retune_share, retune_days):
        return _refit_tuned(previous, spec, settings, train, valid, test, baselines, refit, ease_max_items)
    metrics: dict = {"tuning": f"searched on the validation split ({len(train)} training ratings)"}
    ranked = validation_inputs(spec, train, valid)  # the validation users every choice ranks
    als, als_tried, als_coverage, hybrid_row = None, {}, None, ()
    if collaborative_grid and (settings.collaborative.factors or baselines):
        search = search_als(spec, train, valid, collaborative_grid, seed=settings.seed, sample_seed=seed,
                            max_ratings=tuning_max_ratings, ranked=ranked)
        als, als_tried, als_coverage = search.model, search.ndcg_by_setting, search.validation_coverage
        if search.searched_ratings < len(train):
            metrics["als_tuning_ratings"] = search.searched_ratings
        if settings.collaborative.factors:
            settings = _with_collaborative(settings, als.setting)
            # searched again for the hybrid unless the ALS search ran on a sample: each of its
            # settings would be an ALS fit and a blend search of the whole training split
            if search.searched_ratings == len(train):
                hybrid_row = collaborative_grid.get(HYBRID_ROW, ())
    elif baselines:
        als = ALSBaseline(spec, _baseline_settings(settings.collaborative), settings.seed).fit(train)
    model = HybridRecommender(spec, settings)
    factors = _shared_factors(als, settings)
    l2_tried: dict[float, float] = {}
    if l2_grid:
        choice = choose_l2(model, train, valid, l2_grid, factors=factors)
        model, l2_tried, encoded = choice.model, choice.validation_rmse, choice.encoded
        del choice
        metrics["validation_rmse_by_l2"] = {str(k): round(v, 4) for k, v in l2_tried.items()}
    else:
        encoded = model.encode_training(train)
        model.fit(train, encoded=encoded, factors=factors)
    if min_coverage is None:  # the searched ALS's coverage (None: no search ran)
        # Not capped at MIN_COVERAGE: where ALS's lists are broader (MovieLens: 22.3%), a 20% floor
        # let the search choose narrower lists than the baseline's (21.1% against 23.2%, held out,
        # with the towers fitted from another start; docs/ml.md).
        min_coverage = MIN_COVERAGE if als_coverage is None else als_coverage
    blend, collaborative_tried = None, {}
    if len(hybrid_row) > 1:
        collaborative = choose_collaborative(model, train, valid, encoded, min_coverage, ranked, hybrid_row,
                                             blend_grid)
        model, blend, collaborative_tried = collaborative.model, collaborative.blend, collaborative.by_setting
    del encoded  # the training split encoded, as large as the split: freed before the evaluation and the refit
    ranking = choose_ranking(model, train, valid, min_coverage, ranked=ranked, blend=blend, grid=blend_grid)
    model.ranking = ranking.weights
    c = model.settings.collaborative
    part = als_setting(c) if c.factors else {}
    r = model.ranking
    tuned = Tuned(basis, len(train), als.setting if als is not None else part, part, model.settings.l2,
                  ranking.relative_collaborative, r.popularity, r.norm_power, r.new_user_collaborative,
                  r.new_user_prior, min_coverage, dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))
    metrics, ease_tried = _finish(metrics, tuned, model, als, ranking.ranked, train, valid, test, baselines,
                                  ease_max_items)
    published = _published(model, tuned, ranking.ranked, train, valid, test, refit, metrics)
    return TrainingRun(published, model, train, valid, test, metrics, tuned, ranking.popularity_ndcg_by_weight,
                       als_tried, ease_tried, ranking.blend_by_setting, ranking.new_user_ndcg, collaborative_tried)


def _refit_tuned(tuned: Tuned, spec: RecommenderSpec, settings: HybridSettings, train: pd.DataFrame,
                 valid: pd.DataFrame, test: pd.DataFrame, baselines: bool, refit: bool,
                 ease_max_items: int) -> TrainingRun:
    """`train_recommender` at the settings of an earlier search: one fit, no grid."""
    if tuned.collaborative and settings.collaborative.factors:
        settings = _with_collaborative(settings, tuned.collaborative)
    settings = replace(settings, l2=tuned.l2)
    metrics: dict = {"tuning": f"reused the search of {tuned.searched_at or 'an earlier training'} "
                               f"({tuned.searched_on}, {tuned.train_ratings} training ratings; now {len(train)})"}
    als = None
    if baselines:
        als_settings = CollaborativeSettings(**tuned.als) if tuned.als else _baseline_settings(settings.collaborative)
        als = ALSBaseline(spec, als_settings, settings.seed).fit(train)
    model = HybridRecommender(spec, settings).fit(train, factors=_shared_factors(als, settings))
    ranked = validation_inputs(spec, train, valid)
    chosen = RankingWeights(0.0, tuned.popularity, tuned.norm_power, tuned.new_user_collaborative, tuned.new_user_prior)
    model.ranking = carry_weights(chosen,
                                  tuned.relative_collaborative, model, ranked.users, ranked.items)
    metrics, ease_tried = _finish(metrics, tuned, model, als, ranked, train, valid, test, baselines, ease_max_items)
    published = _published(model, tuned, ranked, train, valid, test, refit, metrics)
    return TrainingRun(published, model, train, valid, test, metrics, tuned, ease_ndcg_by_l2=ease_tried)


def _finish(metrics: dict, tuned: Tuned, model: HybridRecommender, als: ALSBaseline | None, ranked: RankingInputs,
            train: pd.DataFrame, valid: pd.DataFrame, test: pd.DataFrame, baselines: bool,
            ease_max_items: int) -> tuple[dict, dict]:
    """The held-out metrics of `model` and (with `baselines`) of ALS and EASE, and EASE's L2 search on
    the validation users the ranking weights were chosen on (`ranked`)."""
    metrics["coverage_floor"] = tuned.coverage_floor
    held_out = ranking_inputs(model.spec, train, test, also_seen=valid)  # once for the model and every baseline
    metrics.update(evaluate(model, train, test, valid, held_out=held_out))
    metrics.update(_settings_metrics(model))
    metrics["tuned"] = tuned.to_json()
    ease_tried: dict[str, float] = {}
    if baselines:
        for name, value in ranking_metrics(model.spec, als.score_rows, train, test, valid, held_out).items():
            metrics[f"{name}_als"] = value
        metrics["als_params"] = setting_name(als.setting)
        ease, ease_tried = tune_ease(model.spec, train, valid, max_items=ease_max_items, ranked=ranked)
        if ease is not None:
            for name, value in ranking_metrics(model.spec, ease.score_rows, train, test, valid, held_out).items():
                metrics[f"{name}_ease"] = value
            metrics["ease_l2"] = ease.l2
    return metrics, ease_tried


def _published(model: HybridRecommender, tuned: Tuned, ranked, train: pd.DataFrame, valid: pd.DataFrame,
               test: pd.DataFrame, refit: bool, metrics: dict) -> HybridRecommender:
    """The model to publish: refit on every rating from the evaluated towers (`refit`), its
    collaborative weight carried over on the validation users (`ranked`), or `model` itself."""
    published = model
    if refit:
        everything = pd.concat([train, valid, test], ignore_index=True)
        published = model.with_settings().fit(everything, start_from=model)
        published.ranking = carry_weights(model.ranking, tuned.relative_collaborative, published,
                                          ranked.users, ranked.items)
        metrics["published_ratings"] = len(everything)
    else:
        metrics["published_ratings"] = len(train)
    metrics["published_model"] = (  # the manifest says both: what was measured, and what is published
        f"{'refit on every rating' if refit else 'the evaluated model'} ({metrics['published_ratings']} ratings) "
        f"at the settings chosen on validation; the metrics are the model fitted on the {len(train)} training "
        f"ratings, judged on the {len(test)} held out")
    return published


def _with_collaborative(settings: HybridSettings, setting: dict) -> HybridSettings:
    """`settings` with the collaborative part at an ALS `setting`; the towers keep their width."""
    return settings.with_collaborative(replace(settings.collaborative, **setting))


def _shared_factors(als: ALSBaseline | None, settings: HybridSettings):
    """The ALS baseline's factors when the collaborative part has its setting and seed (then they
    are the same fit of the same training split), else None: the model fits its own."""
    c = settings.collaborative
    if als is None or not c.factors or als.seed != settings.seed or als.setting != als_setting(c):
        return None
    return als.user_factors, als.item_factors


def _baseline_settings(c: CollaborativeSettings) -> CollaborativeSettings:
    """The ALS baseline at the collaborative part's own settings (no search asked for); a model
    without collaborative factors: at the search's starting factors."""
    return replace(c, factors=c.factors or ALS_START["factors"])


def _settings_metrics(model: HybridRecommender) -> dict:
    """The settings the model was trained with, under the metadata's names."""
    s, c = model.settings, model.settings.collaborative
    r = model.ranking
    out = {"popularity_weight": r.popularity, "training_iterations": model.iterations,
           "training_converged": model.converged, "l2": s.l2, "dim": s.dim,
           "new_user_als_multiple": r.new_user_collaborative, "new_user_prior": r.new_user_prior}
    if c.factors:
        out.update({"als_weight": model.ranking.collaborative, "als_norm_power": model.ranking.norm_power,
                    "collaborative": setting_name(als_setting(c))})
    return out
