"""The hybrid recommender: two feature towers and an implicit-ALS part in one pair of vectors.

Each tower maps a side's features (one-hot categoricals, standardised numerics, flags, multi-hot
lists and, with `with_ids`, a one-hot id) linearly to an embedding. The vectors are built so that
their inner product *is* the ranking score:

    user = [tower_u(x), bias_u(x), 1, collaborative weight * factors_u]
    item = [tower_i(x), 1, bias_i(x) + popularity prior, factors_i (divided by norm ** power)]

so `tower_u . tower_i + bias_u + bias_i` is the predicted rating minus the global mean, and an
inner-product ANN index ranks items exactly as the model does. A customer or product never seen
in training is embedded from its features (its id column is unknown to the encoder; its factors
come from the features by ridge, `collaborative`). The parts have their own modules:
`encoding` (features), `solvers` (the towers' fit), `collaborative` (the ALS factors); the three
ranking weights are chosen on validation data by `tuning` and given as one `RankingWeights`.
The rules of the published vectors live in `published`, which serving reads without the training
libraries. No Dagster or AWS import.

Train it with `training.train_recommender(frame, spec)`, which chooses the settings and the
ranking weights on validation data and refits on every rating; `fit` alone leaves the ranking
weights at zero. The building blocks, on any table:

    >>> spec = RecommenderSpec(user_id="user", item_id="movie", rating="stars",
    ...                        user_categorical=["country"], user_numeric=["age"], item_multi=["genres"])
    >>> model = HybridRecommender(spec, HybridSettings(dim=32)).fit(frame)   # a pandas DataFrame
    >>> model.predict(frame.head())                                          # ratings
    >>> model.user_embeddings(users_frame), model.item_embeddings(items_frame)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recsys_platform.ml import artifacts, solvers
from recsys_platform.ml.collaborative import CollaborativeSettings, als_factors, factor_weights
from recsys_platform.ml.encoding import (
    TowerEncoder,
    TrainingEncoding,
    canonical_ids,
    encode_training,
    encode_with,
    training_rows,
)
from recsys_platform.ml.published import (
    RankingWeights,
    item_vectors,
    popularity_prior,
    ranking_weights,
    user_vectors,
)
from recsys_platform.ml.spec import RecommenderSpec

SOLVERS = {"alternating": 1e-3, "lbfgs": 1e-7}  # each solver's default relative tolerance (`ftol`)


@dataclass(frozen=True)
class HybridSettings:
    """How the model is shaped and fitted (the same objective whatever the solver).

    Defaults l2=80, bias_l2=5 were chosen on the validation split of both seed modes (docs/ml.md):
    20/20 lost to the bias baseline's RMSE on collaborative data.
    """

    dim: int = 32                 # the vectors' dimension
    with_ids: bool = True         # the towers also read each side's one-hot id (a known row's own part)
    l2: float = 80.0              # the towers' L2
    bias_l2: float | None = 5.0   # the bias columns' own L2 (None: `l2`)
    solver: str = "alternating"   # "alternating" (closed-form sweeps) or "lbfgs"
    max_iter: int = 2000          # sweeps or iterations, a safety net: training stops on its tolerance first
    ftol: float | None = None     # relative loss decrease that stops training (None: the solver's default)
    seed: int = 0
    collaborative: CollaborativeSettings = field(default_factory=CollaborativeSettings)

    def __post_init__(self) -> None:
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {sorted(SOLVERS)}, got {self.solver!r}")
        if self.tower_width < 2:
            raise ValueError(f"dim must leave at least 4 dimensions beside the {self.collaborative.factors} "
                             f"collaborative ones (2 carry the biases), got {self.dim}")
        if self.max_iter < 1:
            raise ValueError(f"max_iter must be at least 1, got {self.max_iter}")

    @property
    def tower_width(self) -> int:
        """The towers' own dimensions: the vector less the two bias columns and the factors."""
        return self.dim - 2 - self.collaborative.factors

    def with_collaborative(self, collaborative: CollaborativeSettings) -> HybridSettings:
        """These settings with another collaborative part: the towers keep their width, and the
        vectors' dimension follows the part's factors."""
        return replace(self, dim=self.tower_width + 2 + collaborative.factors, collaborative=collaborative)

    @property
    def towers(self) -> solvers.TowerSettings:
        return solvers.TowerSettings(
            width=self.tower_width, l2=self.l2, bias_l2=self.l2 if self.bias_l2 is None else self.bias_l2,
            max_iter=self.max_iter, ftol=SOLVERS[self.solver] if self.ftol is None else self.ftol, seed=self.seed)


class HybridRecommender:
    """Fit on a ratings table; embed users and items; predict ratings; rank by inner product."""

    def __init__(self, spec: RecommenderSpec, settings: HybridSettings | None = None):
        self.spec = spec
        self.settings = settings or HybridSettings()
        self.ranking = RankingWeights()
        # Fitted state (`fit`, or `load`)
        self.global_mean = 0.0
        self.user_encoder: TowerEncoder | None = None
        self.item_encoder: TowerEncoder | None = None
        self.user_weights: np.ndarray | None = None  # (encoded columns, tower width + 1 [+ factors])
        self.item_weights: np.ndarray | None = None
        self.item_counts: dict[str, int] = {}  # training ratings per item id (the popularity prior's counts)
        self.training_log: list[float] = []
        self.converged = False    # training stopped on its tolerance, not on max_iter
        self.iterations = 0

    @property
    def dim(self) -> int:
        return self.settings.dim

    @property
    def tower_width(self) -> int:
        return self.settings.tower_width

    # -- training ---------------------------------------------------------------------------
    def encode_training(self, frame: pd.DataFrame) -> TrainingEncoding:
        """`frame` encoded by encoders fitted on it: what every fit on `frame` can share
        (`tuning.choose_l2` encodes once for all the L2 values it tries)."""
        return encode_training(self.spec, frame, self.settings.with_ids)

    def fit(self, frame: pd.DataFrame, collaborative: bool = True, encoded: TrainingEncoding | None = None,
            start: np.ndarray | None = None, start_from: HybridRecommender | None = None,
            factors: tuple[np.ndarray, np.ndarray] | None = None) -> HybridRecommender:
        """Fit the towers on `frame`, then (with collaborative factors and `collaborative`) the
        collaborative part. The towers alone already predict ratings: `tuning.choose_l2`
        compares them on validation RMSE and adds the collaborative part once, to the best.
        `encoded`: `encode_training(frame)` if it ran already (the model then trains on the
        encoding and its encoders, and `frame` is not read again). `start`: an item tower of a
        previous fit on the same encoding to start from (alternating solver only); `start_from`: a
        fitted model of the same tower width (e.g. on part of these ratings) whose item towers of
        `frame`'s items start the sweeps instead: the refit on every rating converges in fewer; at
        the same collaborative settings its factors start the ALS too, which then runs a third of
        its iterations (`collaborative.WARM_ITERATIONS`).
        `factors`: `collaborative_factors(frame)` if computed already (an ALS baseline of the same
        setting fitted on `frame` has them)."""
        encoded = encoded or self.encode_training(frame)
        if encoded.with_ids != self.settings.with_ids:
            raise ValueError(f"the training encoding was made for with_ids={encoded.with_ids}, "
                             f"the model has with_ids={self.settings.with_ids}")
        self.user_encoder, self.item_encoder = encoded.user_encoder, encoded.item_encoder
        self.global_mean = encoded.global_mean
        self.item_counts = encoded.item_counts
        warm_items = None
        if start_from is not None:
            if start_from.tower_width != self.tower_width:
                raise ValueError(f"start_from has towers of width {start_from.tower_width}, this model {self.tower_width}")
            warm_items = start_from.item_encoder.transform(encoded.items) @ start_from.item_weights
        w = self.tower_width
        if self.settings.solver == "alternating":
            fit = solvers.alternate(encoded, self.settings.towers, start,
                                    None if warm_items is None else warm_items[:, : w + 1])
        else:
            fit = solvers.lbfgs(encoded, self.settings.towers)
        self.user_weights, self.item_weights = fit.user_weights, fit.item_weights
        self.training_log, self.converged, self.iterations = fit.training_log, fit.converged, fit.iterations
        if collaborative and self.settings.collaborative.factors:
            warm_factors = None
            if factors is None and warm_items is not None and start_from.settings.collaborative == self.settings.collaborative:
                # the start model's factors of these rows: a known row's own, a new one's from its features
                users = start_from.user_encoder.transform(encoded.users) @ start_from.user_weights[:, w + 1:]
                warm_factors = (users, warm_items[:, w + 1:])
            self._attach_factors(encoded, factors, warm_factors)
        return self

    def collaborative_factors(self, frame: pd.DataFrame, threads: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Implicit-ALS factors of `frame`'s ratings, (users, items) in the order of their first
        rating, as `fit_collaborative(frame, factors=...)` takes them, on `threads` threads (0:
        every core). Needs no fitted tower: it can run while the towers are fitted (`tuning.choose_l2`
        does, in a thread)."""
        users, items, u_index, i_index = training_rows(self.spec, frame)
        return als_factors(u_index, i_index, frame[self.spec.rating].astype(float).to_numpy(), len(users),
                           len(items), self.settings.collaborative, self.settings.seed, threads)

    def fit_collaborative(self, frame: pd.DataFrame | None, factors: tuple[np.ndarray, np.ndarray] | None = None,
                          encoded: TrainingEncoding | None = None) -> HybridRecommender:
        """Add the collaborative part (nothing without factors in the settings) to towers fitted
        on the same `frame`. `factors`: what `collaborative_factors(frame)` returned, if it ran
        already (e.g. beside the towers' fits); `encoded`: the encoding the towers were fitted on
        (then `frame` is not read)."""
        if not self.settings.collaborative.factors:
            return self
        self._check_fitted()
        if self.user_weights.shape[1] != self.tower_width + 1:
            raise RuntimeError("the collaborative part is already fitted: fit() the towers again first")
        if encoded is None:
            encoded = encode_with(self.spec, frame, self.user_encoder, self.item_encoder, self.item_counts)
        elif encoded.user_encoder is not self.user_encoder or encoded.item_encoder is not self.item_encoder:
            raise ValueError("the encoding given is not the one these towers were fitted on")
        self._attach_factors(encoded, factors)
        return self

    def with_collaborative(self, collaborative: CollaborativeSettings, encoded: TrainingEncoding) -> HybridRecommender:
        """A model with these towers and another collaborative part (`collaborative`), fitted on
        `encoded`, the encoding the towers were fitted on. The towers do not depend on the
        collaborative part, so its settings can be tried on one fit of them
        (`tuning.choose_collaborative`). This model is left as it is: the new one's weights are
        its towers' with the new part appended (a copy)."""
        self._check_fitted()
        w = self.tower_width
        other = HybridRecommender(self.spec, self.settings.with_collaborative(collaborative))
        other.global_mean, other.item_counts = self.global_mean, self.item_counts
        other.user_encoder, other.item_encoder = self.user_encoder, self.item_encoder
        other.training_log, other.converged, other.iterations = self.training_log, self.converged, self.iterations
        other.user_weights, other.item_weights = self.user_weights[:, : w + 1], self.item_weights[:, : w + 1]
        return other.fit_collaborative(None, encoded=encoded)

    def _attach_factors(self, encoded: TrainingEncoding, factors=None, warm=None) -> None:
        """The ALS factors of the encoded ratings (computed here if None, from the `warm`
        (users, items) factors if given), appended to the towers' weights
        (`collaborative.factor_weights`)."""
        e, s = encoded, self.spec
        if factors is not None and (len(factors[0]), len(factors[1])) != (e.xu.shape[0], e.xi.shape[0]):
            raise ValueError(f"factors for {len(factors[0])} users and {len(factors[1])} items given, but the frame "
                             f"has {e.xu.shape[0]} and {e.xi.shape[0]}: pass collaborative_factors(frame) "
                             "of the same frame")
        if factors is None:
            factors = als_factors(e.u_index, e.i_index, e.ratings, e.xu.shape[0], e.xi.shape[0],
                                  self.settings.collaborative, self.settings.seed, start=warm)
        ridge = self.settings.collaborative.feature_ridge
        user_part = factor_weights(self.user_encoder, e.users, e.xu, factors[0], s.user_id, ridge)
        item_part = factor_weights(self.item_encoder, e.items, e.xi, factors[1], s.item_id, ridge)
        self.user_weights = np.hstack([self.user_weights, user_part])
        self.item_weights = np.hstack([self.item_weights, item_part])

    # -- inference --------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if self.user_weights is None:
            raise RuntimeError("the model is not trained; call fit() or load it")

    def _with_id(self, frame: pd.DataFrame, id_column: str, features_only: bool) -> pd.DataFrame:
        """The frame with its id column; a missing one is an error unless asked for (cold start),
        since it would silently make every row new (and, for items, zero the popularity prior)."""
        if id_column in frame:
            return frame
        if not features_only:
            raise ValueError(f"the frame has no {id_column!r} column: pass features_only=True to embed every "
                             "row from its features alone (as for rows never seen in training)")
        return frame.assign(**{id_column: None})

    def user_embeddings(self, users: pd.DataFrame, features_only: bool = False,
                        ranking: RankingWeights | None = None) -> np.ndarray:
        """(n, dim) float32: [tower, bias, 1, collaborative weight * factors] per user row
        (`published.user_vectors`). A row whose id is None or unseen is embedded from its features
        (a new customer), with the new-user weights. `ranking`: other weights than the model's (the
        tuning's grid)."""
        self._check_fitted()
        users = self._with_id(users, self.spec.user_id, features_only)
        x = self.user_encoder.transform(users)
        ids = self.user_encoder.id_columns
        new = None if ids is None else np.asarray(x[:, ids].sum(axis=1)).ravel() == 0  # no id column set
        return user_vectors(x @ self.user_weights, self.tower_width, ranking or self.ranking, new)

    def popularity_prior(self, items: pd.DataFrame, ranking: RankingWeights | None = None) -> np.ndarray:
        """popularity weight * log(1 + ratings of the item in training); 0 for a new item."""
        ranking = ranking or self.ranking
        if not ranking.popularity or self.spec.item_id not in items:  # no id: only features_only callers
            return np.zeros(len(items))
        counts = canonical_ids(items[self.spec.item_id]).map(self.item_counts).fillna(0).to_numpy(dtype=float)
        return popularity_prior(counts, ranking)

    def item_embeddings(self, items: pd.DataFrame, features_only: bool = False,
                        ranking: RankingWeights | None = None) -> np.ndarray:
        """(n, dim) float32: [tower, 1, bias + popularity prior, factors] per item row
        (`published.item_vectors`). The inner product with a user vector is the ranking score: the
        predicted rating minus the global mean, plus the item's popularity prior and the weighted
        collaborative score."""
        self._check_fitted()
        ranking = ranking or self.ranking
        frame = self._with_id(items, self.spec.item_id, features_only)
        return item_vectors(self.item_encoder.transform(frame) @ self.item_weights, self.tower_width, ranking,
                            self.popularity_prior(items, ranking))

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """Predicted ratings (without the popularity prior and the collaborative part, which
        only serve ranking)."""
        self._check_fitted()
        s = self.spec
        return self.predict_encoded(self.user_encoder.transform(self._with_id(frame, s.user_id, False)),
                                    self.item_encoder.transform(self._with_id(frame, s.item_id, False)))

    def predict_encoded(self, xu: sp.csr_matrix, xi: sp.csr_matrix) -> np.ndarray:
        """`predict` for rows already encoded by this model's `user_encoder` and `item_encoder`
        (`tuning.choose_l2` encodes its validation rows once for every L2 it tries). The user's
        tower and bias are rounded to float32 as `user_embeddings` publishes them."""
        self._check_fitted()
        w = self.tower_width
        u = (xu @ self.user_weights[:, : w + 1]).astype(np.float32).astype(np.float64)
        e = xi @ self.item_weights[:, : w + 1]
        return self.global_mean + np.einsum("nk,nk->n", u[:, :w], e[:, :w]) + u[:, w] + e[:, w]

    def score(self, users: pd.DataFrame, items: pd.DataFrame) -> np.ndarray:
        """(users, items) ranking scores: exactly the inner products of the published vectors."""
        return self.user_embeddings(users).astype(np.float64) @ self.item_embeddings(items).astype(np.float64).T

    # -- the published form (model/config.json) ----------------------------------------------
    def config(self) -> dict:
        """The settings, the ranking weights and how training went, under the artifact's keys."""
        s, c, r = self.settings, self.settings.collaborative, self.ranking
        return {"dim": s.dim, "hybrid": s.with_ids, "l2": s.l2, "max_iter": s.max_iter,
                "ftol": s.towers.ftol, "solver": s.solver, "converged": self.converged, "iterations": self.iterations,
                "seed": s.seed, "global_mean": self.global_mean, "metric": "inner_product",
                "popularity_weight": r.popularity, "spec": asdict(self.spec),
                "als_factors": c.factors, "als_weight": r.collaborative, "als_norm_power": r.norm_power,
                "new_user_als_multiple": r.new_user_collaborative, "new_user_prior": r.new_user_prior,
                "als_regularization": c.regularization, "als_alpha": c.alpha,
                "als_iterations": c.iterations, "als_dislikes": c.dislikes, "feature_ridge": c.feature_ridge,
                "bias_l2": s.towers.bias_l2}

    @classmethod
    def from_config(cls, config: dict) -> HybridRecommender:
        """The unfitted model that `config()` describes, with its ranking weights. Settings a model
        of an older version lacks take their defaults (`bias_l2`: `l2`; `solver`: L-BFGS, the
        solver of the time)."""
        defaults = CollaborativeSettings()
        collaborative = CollaborativeSettings(
            factors=config.get("als_factors", 0), regularization=config.get("als_regularization", defaults.regularization),
            alpha=config.get("als_alpha", defaults.alpha), iterations=config.get("als_iterations", defaults.iterations),
            feature_ridge=config.get("feature_ridge", defaults.feature_ridge),
            dislikes=config.get("als_dislikes", defaults.dislikes))
        settings = HybridSettings(dim=config["dim"], with_ids=config["hybrid"], l2=config["l2"],
                                  bias_l2=config.get("bias_l2"), solver=config.get("solver", "lbfgs"),
                                  max_iter=config["max_iter"], ftol=config.get("ftol"), seed=config["seed"],
                                  collaborative=collaborative)
        model = cls(RecommenderSpec(**config["spec"]), settings)
        model.ranking = ranking_weights(config)
        model.global_mean = config["global_mean"]
        model.converged, model.iterations = config.get("converged", False), config.get("iterations", 0)
        return model

    @classmethod
    def load(cls, store, version: str | None = None) -> tuple[str, HybridRecommender]:
        """The published model of `version` (default: LATEST) in a bucket (`ml.artifacts`), every
        file checked against its manifest; nothing is unpickled."""
        parts = artifacts.read_model(store, version)
        model = cls.from_config(parts.config)
        model.item_counts = parts.item_counts
        model.user_encoder = TowerEncoder.from_json(parts.scalers["user_ohe"], parts.scalers["user_std_scaler"])
        model.item_encoder = TowerEncoder.from_json(parts.scalers["item_ohe"], parts.scalers["item_std_scaler"])
        model.user_weights, model.item_weights = parts.user_weights, parts.item_weights
        return parts.version, model

    def with_settings(self, **changes) -> HybridRecommender:
        """An unfitted model of the same spec with some settings changed (e.g. `l2`)."""
        return HybridRecommender(self.spec, replace(self.settings, **changes))
