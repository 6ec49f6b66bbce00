"""`recommender_model`: train, evaluate against baselines, and publish only a model that wins."""

import datetime as dt
import hashlib

import dagster as dg
import pandas as pd

from recsys_platform.assets.batch.assets import TRAINING_KEY
from recsys_platform.assets.batch.partitions import (
    CUSTOMERS,
    lake_differences,
    latest_partition_metadata,
)
from recsys_platform.assets.feedback import INTERACTIONS_KEY
from recsys_platform.assets.shared import OWNERS
from recsys_platform.batch.contract import DATASET, Layout
from recsys_platform.feedback import replay
from recsys_platform.feedback.training import FeedbackWeights, window_hours, window_ratings
from recsys_platform.ml import artifacts
from recsys_platform.ml.collaborative import CollaborativeSettings
from recsys_platform.ml.evaluation import ALS_GRID
from recsys_platform.ml.hybrid import HybridSettings
from recsys_platform.ml.plots import model_report, ranking_comparison
from recsys_platform.ml.spec import RETAIL
from recsys_platform.ml.training import (
    RETUNE_DAYS,
    RETUNE_SHARE,
    TrainingRun,
    Tuned,
    train_recommender,
)
from recsys_platform.ml.tuning import L2_GRID
from recsys_platform.resources import ObjectStoreResource
from recsys_platform.storage import lake

MODEL_KEY = dg.AssetKey("recommender_model")
BEATS_BIAS = "beats_bias_baseline"
BEATS_POPULARITY = "beats_popularity_ndcg"
LAKE_MATCHES_BUILDS = "lake_matches_its_last_builds"
NOT_WORSE_THAN_SERVING = "challenger_not_worse_than_serving"


class ModelConfig(dg.Config):
    """The run's settings of `recommender_model` (the launchpad's config), as `HybridSettings` takes them."""

    # The vectors' dimension before the search: the towers' width is dim - 2 - als_factors, and
    # the published dimension follows the factors the search chooses (tower width + 2 + factors).
    dim: int = 32
    hybrid: bool = True  # the towers read each side's one-hot id too (HybridSettings.with_ids)
    als_factors: int = 16  # implicit ALS factors to start the search from (0: the two towers alone)
    als_regularization: float = 0.1
    als_alpha: float = 10.0  # confidence 1 + alpha * rating
    als_iterations: int = 30
    # Search the ALS settings on validation NDCG@10 over evaluation.ALS_GRID (the ALS baseline
    # is the same search); false: the als_* settings as they are.
    tune_collaborative: bool = True
    # Publish the model refit on every rating at the settings chosen (false: the one evaluated,
    # fitted on the training split alone).
    refit: bool = True
    # The last published version's search (L2, ALS setting, ranking weights) is reused while the
    # training split is within this share of the ratings it searched, the search is at most
    # retune_days old, and nothing above that shapes the search changed; either 0: search on
    # every training (training.RETUNE_SHARE, RETUNE_DAYS).
    retune_share: float = RETUNE_SHARE
    retune_days: float = RETUNE_DAYS
    # The ranking weights are chosen for NDCG among those whose top-10 lists cover this share of
    # the catalog; unset: the tuned ALS baseline's coverage (train_recommender).
    min_coverage: float | None = None
    l2: float | None = None  # the towers' L2; None: chosen on validation RMSE from L2_GRID (80, 200, 500)
    bias_l2: float | None = 5.0  # the bias columns' L2 (None: l2); see docs/ml.md on the defaults
    solver: str = "alternating"  # "alternating" (closed-form sweeps) or "lbfgs": the same objective
    max_iter: int = 2000  # sweeps or iterations, a safety net: training stops on its tolerance first
    #                       (metadata: training_converged)
    test_share: float = 0.2
    valid_share: float = 0.1
    seed: int = 0
    # The stream's interactions of the last hours join the training split as implied ratings by
    # kind (feedback.training); 0 hours: the ratings alone.
    interaction_hours: int = 168
    cart_rating: float = 5.0
    browse_rating: float = 3.0
    # Champion and challenger (feedback.replay): a share of sessions no training reads; the new model
    # and the serving one are replayed on those of the last replay_hours before the vectors switch.
    held_out_sessions: float = 0.1
    replay_hours: int = 24
    replay_k: int = 5
    replay_min_events: int = 50  # fewer held-out events answered by both: not judged, the challenger goes through
    replay_margin: float = 0.02  # the challenger may trail the serving model's hit rate by this much
    # Train only when every partition of the lake is what its last successful build wrote (a
    # failed or interrupted build never feeds a model). False: train on the lake as it is (a lake
    # written outside Dagster, e.g. by a benchmark); the metadata says so.
    require_built_lake: bool = True

    def settings(self) -> HybridSettings:
        """The model's settings (L2: the grid's first when it is chosen)."""
        collaborative = CollaborativeSettings(factors=self.als_factors, regularization=self.als_regularization,
                                              alpha=self.als_alpha, iterations=self.als_iterations)
        return HybridSettings(
            dim=self.dim, with_ids=self.hybrid, l2=L2_GRID[0] if self.l2 is None else self.l2, bias_l2=self.bias_l2,
            solver=self.solver, max_iter=self.max_iter, seed=self.seed, collaborative=collaborative)

    def train(self, frame: pd.DataFrame, extra_train: pd.DataFrame | None = None, baselines: bool = True,
              previous: Tuned | None = None, **grids) -> TrainingRun:
        """`train_recommender` on the retail table with these settings (`baselines`: score the ALS and
        EASE baselines on the test split too, as the asset does; `previous`: the last search's
        choices, `last_search`; `grids`: other `l2_grid`, `collaborative_grid` or `blend_grid` than
        these settings search, as the benchmark's narrow search does)."""
        grids = {"l2_grid": L2_GRID if self.l2 is None else None,
                 "collaborative_grid": ALS_GRID if self.tune_collaborative else None, **grids}
        return train_recommender(
            frame, RETAIL, self.settings(), test_share=self.test_share, valid_share=self.valid_share, seed=self.seed,
            min_coverage=self.min_coverage, refit=self.refit, baselines=baselines, extra_train=extra_train,
            previous=previous, retune_share=self.retune_share, retune_days=self.retune_days, **grids)


def last_search(store) -> Tuned | None:
    """The search recorded by the last published version's manifest (None: nothing published,
    an unreadable manifest, or one from before the record)."""
    try:
        version, manifest = artifacts.read_manifest(store)
    except artifacts.ArtifactError:
        return None
    return Tuned.from_json(manifest.get("metrics", {}).get("tuned"), searched_at=version)


def training_frame(store, layout: Layout) -> tuple[pd.DataFrame, str]:
    """The whole training dataset from the lake, and a version string of its content."""
    table = lake.read_partitions(store, DATASET, layout.column)
    if layout.buckets and layout.column in table.column_names:
        table = table.drop_columns([layout.column])
    frame = table.to_pandas().sort_values(["customerNumber", "productCode"]).reset_index(drop=True)
    digest = hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()).hexdigest()[:16]
    return frame, f"{len(frame)}-{digest}"


def partition_rows(frame: pd.DataFrame, layout: Layout) -> dict[str, int]:
    """Rows per partition key of the training frame."""
    out: dict[str, int] = {}
    for customer, rows in frame.groupby("customerNumber").size().items():
        key = layout.partition_of(int(customer))
        out[key] = out.get(key, 0) + int(rows)
    return out


def built_rows(instance: dg.DagsterInstance) -> dict[str, int]:
    """Rows per partition as the last successful build of each recorded them (0: removed)."""
    return {k: int(m["dagster/row_count"].value) for k, m in latest_partition_metadata(instance, TRAINING_KEY).items()
            if "dagster/row_count" in m}


def _challenge(store, lake_store, published: artifacts.Publication | None, now: dt.datetime,
               config: ModelConfig) -> tuple[dg.AssetCheckResult, dict]:
    """The champion/challenger check of a newly published model, and the figures for the page."""
    def result(passed: bool, description: str, figures: dict) -> tuple[dg.AssetCheckResult, dict]:
        return dg.AssetCheckResult(check_name=NOT_WORSE_THAN_SERVING, passed=passed, severity=dg.AssetCheckSeverity.ERROR,
                                   description=description, metadata={"replay": dg.MetadataValue.json(figures)}), figures

    if published is None:
        return result(False, "nothing published: nothing may switch", {})
    serving = artifacts.serving_version(store)
    table = replay.read_held_out(lake_store, window_hours(lake_store, now, config.replay_hours),
                                 config.held_out_sessions)
    moments = replay.moments(table)
    challenger = replay.replay(store, published.version, moments, config.replay_k)
    try:
        champion = replay.replay(store, serving, moments, config.replay_k) if serving else None
        passed, description = replay.verdict(challenger, champion, config.replay_min_events, config.replay_margin)
    except artifacts.ArtifactError as e:  # a broken serving pair is no reason to keep it
        champion, passed = None, True
        description = f"the serving model {serving} cannot be read ({e}): {published.version} replaces it"
    figures = {"held_out_events": len(moments), "k": config.replay_k,
               **{f"{role}": {"version": r.version, "answered": r.judged, "hits": r.hits,
                              "hit_rate": None if r.hit_rate is None else round(r.hit_rate, 4)}
                  for role, r in (("challenger", challenger), ("serving", champion)) if r is not None}}
    return result(passed, description, figures)


def build_model_asset(layout: Layout) -> dg.AssetsDefinition:
    @dg.asset(
        key=MODEL_KEY,
        deps=[TRAINING_KEY, INTERACTIONS_KEY],
        group_name="ml",
        kinds={"scikitlearn", "numpy"},
        owners=OWNERS,
        check_specs=[
            dg.AssetCheckSpec(LAKE_MATCHES_BUILDS, asset=MODEL_KEY, blocking=True,
                              description="Every partition of the lake is what its last successful build wrote (rows "
                              "per partition); otherwise nothing is trained (a failed or partial build never feeds "
                              "a model)."),
            dg.AssetCheckSpec(BEATS_BIAS, asset=MODEL_KEY, blocking=True,
                              description="Held-out RMSE below the user/item-bias baseline's; otherwise nothing is published."),
            dg.AssetCheckSpec(BEATS_POPULARITY, asset=MODEL_KEY, blocking=True,
                              description="Held-out NDCG@10 above the popularity baseline's; otherwise nothing is published."),
            dg.AssetCheckSpec(NOT_WORSE_THAN_SERVING, asset=MODEL_KEY, blocking=True,
                              description="Replayed on the last hours' held-out sessions, the new model's hit rate is "
                              "not below the serving model's by more than a margin; otherwise its vectors do not "
                              "switch and the serving pair stays (too few events to judge: it says so and passes)."),
        ],
        description=(
            "A hybrid recommender: a two-tower model of the ratings (scikit-learn one-hot encoders and "
            "standard scalers, linear towers, biases folded into the vectors) beside implicit-ALS "
            "factors of the ratings as feedback (their settings searched on a validation split over a wide "
            "grid, the same search that tunes the ALS baseline; a customer or product never "
            "seen in training gets them from its features by ridge regression), so that the inner "
            "product is the ranking score: predicted rating + weighted collaborative score + a "
            "popularity prior, both weights chosen on a validation split. Published refit on every "
            "rating at the settings chosen (`ml.training.train_recommender`); the search runs again only when the "
            "training split moved by more than `retune_share` from the ratings the last published version's search "
            "saw or that search is older than `retune_days`, otherwise its choices are refit (metadata `tuning` "
            "says which). Trained on "
            "`ratings_ml_training` and the last week's `interactions` (implied ratings by kind in the training split "
            "only; a customer seen only in the stream gets vectors), evaluated on a held-out split against "
            "global-mean, bias, popularity, implicit-ALS and EASE (tuned on the validation split) baselines, "
            "and published as `<artifacts>/<version>/{model,scalers,embeddings}/` with a manifest and a "
            "`LATEST` pointer written last (`CURRENT` moves when its vectors serve). A model that does not "
            "beat the bias baseline on RMSE and popularity on NDCG@10 is not published. It trains only "
            "when every partition of the lake is what its last successful build wrote (row counts per "
            "partition against the builds' metadata): a failed or partial build never feeds a model."),
    )
    def recommender_model(context: dg.AssetExecutionContext, config: ModelConfig,
                          lake_store: ObjectStoreResource, artifacts_store: ObjectStoreResource):
        frame, data_version = training_frame(lake_store.store, layout)
        if frame.empty:
            raise dg.Failure(description=f"{DATASET} is empty in {lake_store.store.uri(DATASET)}: nothing to train on")
        lake_rows = partition_rows(frame, layout)
        differences = lake_differences(built_rows(context.instance), lake_rows)
        lake_check = dg.AssetCheckResult(
            check_name=LAKE_MATCHES_BUILDS, passed=not differences,
            severity=dg.AssetCheckSeverity.ERROR if config.require_built_lake else dg.AssetCheckSeverity.WARN,
            description="; ".join(differences) + ("" if config.require_built_lake else " (trained anyway: "
                                                  "require_built_lake is false)") if differences else
            f"all {len(lake_rows)} partitions of the lake are what their last builds wrote",
            metadata={"differences": dg.MetadataValue.json(differences)})
        if differences and config.require_built_lake:
            yield lake_check
            raise dg.Failure(
                description=f"not trained: {DATASET} at {lake_store.store.uri(DATASET)} is not what its last "
                "successful builds wrote: " + "; ".join(differences) + ". Rebuild those partitions (a backfill "
                f"of {DATASET}, or the stale-partition schedule), or set require_built_lake: false to train on "
                "the lake as it is", metadata={"differences": dg.MetadataValue.json(differences)})
        spec = RETAIL
        now = dt.datetime.now(dt.timezone.utc)
        # A customer once registered as a partition and now without ratings left the source: its
        # events must not bring it back (the hash-bucket layout registers buckets, not customers).
        deleted = set() if layout.buckets else (
            {int(k) for k in context.instance.get_dynamic_partitions(CUSTOMERS.name)} - set(frame["customerNumber"]))
        implied, hours = window_ratings(lake_store.store, now, config.interaction_hours, frame, spec,
                                        FeedbackWeights(config.cart_rating, config.browse_rating),
                                        config.held_out_sessions, deleted)
        if hours:
            context.log.info(f"{implied.interactions} interactions of {len(hours)} hour(s) give {len(implied.rows)} "
                             f"implied ratings ({implied.stream_only_customers} customers seen only in the stream)")
            data_version = f"{data_version}+{len(implied.rows)}-interactions-to-{hours[-1]}"
        run = config.train(frame, extra_train=implied.rows, previous=last_search(artifacts_store.store))
        model, test, metrics = run.model, run.test, run.metrics
        context.log.info(f"settings: {metrics['tuning']}")
        if run.collaborative_by_setting:
            context.log.info(f"collaborative part {metrics['collaborative']} (ALS baseline {metrics['als_params']}); "
                             f"validation NDCG@10 and coverage by setting: {run.collaborative_by_setting}")
        context.log.info(f"validation NDCG@10 and coverage by setting: "
                         f"{run.blend_ndcg_by_weight or run.popularity_ndcg_by_weight}; chose popularity "
                         f"{model.ranking.popularity}, collaborative {model.ranking.collaborative:.4g}, factor norm "
                         f"power {model.ranking.norm_power}")
        context.log.info(f"held-out metrics: {metrics}")
        rmse_wins = metrics["rmse"] < metrics["rmse_bias"]
        ndcg_wins = metrics["ndcg@10"] > metrics["ndcg@10_popularity"]
        wins = rmse_wins and ndcg_wins
        published = None
        if wins:
            everything = pd.concat([frame, implied.rows], ignore_index=True)  # stream-only customers too
            users = everything[spec.user_columns()].drop_duplicates(spec.user_id)
            items = frame[spec.item_columns()].drop_duplicates(spec.item_id)
            published = artifacts.publish(artifacts_store.store, model, users, items, metrics, data_version)
            context.log.info(f"published model version {published.version}")
        replay_check, replayed = _challenge(artifacts_store.store, lake_store.store, published, now, config)
        evaluated = run.evaluated  # fitted on the training split: the test split is new to it
        report = model_report(test[spec.rating].to_numpy(), evaluated.predict(test), evaluated.training_log,
                              "sweep" if evaluated.settings.solver == "alternating" else "L-BFGS evaluation")
        rounded = {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items()}

        def baselines(metric: str) -> str:
            names = {"popularity": "popularity", "als": "implicit ALS", "ease": "EASE"}
            return ", ".join(f"{label} {rounded[f'{metric}_{key}']}" for key, label in names.items()
                             if f"{metric}_{key}" in rounded)
        evaluation = [
            ("RMSE (lower is better)", rounded["rmse"], f"bias {rounded['rmse_bias']}, global mean {rounded['rmse_global_mean']}"),
            ("MAE (lower is better)", rounded["mae"], f"bias {rounded['mae_bias']}, global mean {rounded['mae_global_mean']}"),
            ("NDCG@10", rounded["ndcg@10"], baselines("ndcg@10")),
            ("Recall@10 (hits / relevant items)", rounded["recall@10"], baselines("recall@10")),
            ("Recall@10 capped (hits / min(10, relevant))", rounded["recall@10_capped"],
             f"popularity {rounded['recall@10_capped_popularity']}"),
            ("catalog coverage of the top 10", rounded["coverage"], baselines("coverage")),
        ]
        yield dg.MaterializeResult(
            metadata={
                "model_version": published.version if published else "not published",
                "evaluation": dg.MetadataValue.table(
                    records=[dg.TableRecord({"metric": m, "model": v, "baselines": b}) for m, v, b in evaluation],
                    schema=dg.TableSchema(columns=[dg.TableColumn("metric", "string"), dg.TableColumn("model", "float"),
                                                   dg.TableColumn("baselines", "string")])),
                "evaluation_plot": dg.MetadataValue.md(report),
                "ranking_plot": dg.MetadataValue.md(ranking_comparison(metrics, run.blend_ndcg_by_weight, metrics["coverage_floor"])),
                "published": bool(published),
                "training_data_version": data_version,
                "training_rows": len(frame),
                "interaction_hours": len(hours), "interactions_read": implied.interactions,
                "implied_ratings": len(implied.rows), "stream_only_customers": implied.stream_only_customers,
                "interactions_left_out": dg.MetadataValue.json({
                    "deleted_customers": len(deleted), "unknown_product_pairs": implied.unknown_products,
                    "customers_without_features": implied.featureless_customers}),
                "lake_matches_builds": not differences,
                "train_ratings": int(metrics["train_ratings"]),
                "held_out_ratings": int(metrics["test_ratings"]),
                "als_params": metrics["als_params"],
                "tuning": metrics["tuning"],
                "collaborative_settings": metrics.get("collaborative", "none"),
                "vector_dim": int(model.dim),
                "published_ratings": int(metrics["published_ratings"]),
                "training_iterations": int(metrics["training_iterations"]),
                "training_converged": bool(metrics["training_converged"]),
                "metrics": dg.MetadataValue.json(rounded),
                "replay": dg.MetadataValue.json(replayed),
                "location": dg.MetadataValue.path(artifacts_store.store.uri(published.version)) if published else "",
                **{k: dg.MetadataValue.float(float(v)) for k, v in rounded.items() if isinstance(v, float)},
            },
            check_results=[
                lake_check, replay_check,
                dg.AssetCheckResult(
                    check_name=BEATS_BIAS, passed=rmse_wins, severity=dg.AssetCheckSeverity.ERROR,
                    description=f"held-out RMSE {rounded['rmse']} is " + ("below" if rmse_wins else "not below")
                    + f" the bias baseline's {rounded['rmse_bias']}" + (": published" if wins else ": not published"),
                    metadata={"rmse": rounded["rmse"], "rmse_bias": rounded["rmse_bias"]}),
                dg.AssetCheckResult(
                    check_name=BEATS_POPULARITY, passed=ndcg_wins, severity=dg.AssetCheckSeverity.ERROR,
                    description=f"held-out NDCG@10 {rounded['ndcg@10']} is " + ("above" if ndcg_wins else "not above")
                    + f" popularity's {rounded['ndcg@10_popularity']}" + (": published" if wins else ": not published")
                    + f" (implicit ALS tuned on validation: {rounded['ndcg@10_als']})",
                    metadata={"ndcg@10": rounded["ndcg@10"], "ndcg@10_popularity": rounded["ndcg@10_popularity"],
                              "ndcg@10_als": rounded["ndcg@10_als"]}),
            ],
        )

    return recommender_model
