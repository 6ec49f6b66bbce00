"""The published model as serving reads it: numpy alone, no pandas, scipy or scikit-learn.

Two things live here, once, for training and serving alike:
- the rules of the vectors: how a tower's output and the ranking weights make the published user
  and item vectors (`user_vectors`, `item_vectors`, `RankingWeights`), how an id is compared
  (`canonical_id`), how a multi-valued feature splits (`tokens`);
- `PublishedModel`: a model's artifacts (`artifacts.read_model`) as arrays, embedding users and
  items from plain rows. Training encodes whole frames with its own sparse encoders
  (`encoding.TowerEncoder`); this reads the same fitted parameters and computes the same numbers
  (tests compare every user and item of a model to 1e-6), so the Lambdas import numpy and psycopg,
  not the training libraries.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from recsys_platform.ml import artifacts
from recsys_platform.ml.spec import RecommenderSpec

NULL = "<null>"  # a missing categorical value, as the one-hot encoder sees it


def canonical_id(value) -> str | None:
    """An id as every part compares it: a whole number without a decimal point whatever its type
    (103, 103.0 and "103" are one id), anything else as its string; missing is None."""
    if value is None or value is np.nan or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (bool, np.bool_)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value)


def tokens(value) -> list[str]:
    """A multi-valued feature's values: a list (or set, tuple, array) or one "|"-separated string."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return []
    if isinstance(value, str):
        return [t.strip() for t in value.split("|") if t.strip()]
    if isinstance(value, (list, tuple, set, frozenset, np.ndarray)):
        return [str(t) for t in value]
    return [str(value)]


@dataclass(frozen=True)
class RankingWeights:
    """How the ranking score weighs its parts beside the predicted rating (chosen on validation).

    Ratings exist only for purchases, so what users buy next follows item popularity, which a
    rating regression cannot see: `popularity` folds log(1 + training ratings) into the item bias.
    `collaborative` weighs the ALS part. An item's factor norm grows with its ratings, a second
    popularity term that puts the same items on every list: the factors are divided by their
    norm to `norm_power` (0: as ALS gives them; 1: their direction alone).

    A new user (an id unknown to the model, embedded from features) has no ratings of its own:
    its collaborative factors are what its features predict, and what suits it best is not what
    suits a known user. Its vector weighs the collaborative part by `new_user_collaborative`
    times `collaborative`, and the item bias with the popularity prior by `new_user_prior`
    (both chosen on validation users embedded from their features: `tuning.choose_new_user_weights`).
    """

    collaborative: float = 0.0
    popularity: float = 0.0
    norm_power: float = 0.0
    new_user_collaborative: float = 1.0
    new_user_prior: float = 1.0


def user_vectors(e: np.ndarray, width: int, ranking: RankingWeights, new: np.ndarray | None = None) -> np.ndarray:
    """(n, dim) float32 from the user tower's output `e` (tower, bias, factors):
    [tower, bias, 1, collaborative weight * factors]; a row of `new` (a boolean mask: ids the
    model does not know; None: none) [tower, bias, new_user_prior, collaborative weight *
    new_user_collaborative * factors]."""
    prior = np.ones((len(e), 1))
    weight = np.full((len(e), 1), ranking.collaborative)
    if new is not None and new.any():
        prior[new] = ranking.new_user_prior
        weight[new] *= ranking.new_user_collaborative
    return np.hstack([e[:, :width], e[:, width:width + 1], prior, weight * e[:, width + 1:]]).astype(np.float32)


def item_vectors(e: np.ndarray, width: int, ranking: RankingWeights, prior: np.ndarray) -> np.ndarray:
    """(n, dim) float32 from the item tower's output `e`: [tower, 1, bias + prior, factors divided
    by their norm ** norm_power]. With `user_vectors`, the inner product is the ranking score."""
    factors = e[:, width + 1:]
    if ranking.norm_power and factors.shape[1]:
        norms = np.linalg.norm(factors, axis=1, keepdims=True)
        factors = factors / np.maximum(norms, 1e-9) ** ranking.norm_power
    bias = e[:, width] + prior
    return np.hstack([e[:, :width], np.ones((len(e), 1)), bias[:, None], factors]).astype(np.float32)


def ranking_weights(config: dict) -> RankingWeights:
    """The ranking weights of a model's config.json (`HybridRecommender.config`); a model of an
    older version lacks some, which take their defaults."""
    return RankingWeights(config.get("als_weight", 0.0), config.get("popularity_weight", 0.0),
                          config.get("als_norm_power", 0.0), config.get("new_user_als_multiple", 1.0),
                          config.get("new_user_prior", 1.0))


def popularity_prior(counts: np.ndarray, ranking: RankingWeights) -> np.ndarray:
    """popularity weight * log(1 + training ratings of each item); 0 for a new item."""
    return ranking.popularity * np.log1p(counts) if ranking.popularity else np.zeros(len(counts))


def _number(value) -> float:
    """A numeric feature's value; missing is NaN (the scaler's mean stands in for it)."""
    return math.nan if value is None else float(value)


@dataclass(frozen=True)
class TowerTransform:
    """One side's fitted encoder (`encoding.TowerEncoder.to_json`) as lookups and arrays, in the
    encoded row's column order: one-hot blocks (categoricals, then the id), standardised numerics,
    0/1 flags, multi-hot blocks."""

    one_hot: list[tuple[str, dict[str, int]]]   # column, value -> encoded column
    id_column: str | None
    numeric: list[str]
    mean: np.ndarray
    scale: np.ndarray
    numeric_start: int
    binary: list[str]
    binary_start: int
    multi: list[tuple[str, dict[str, int]]]     # column, token -> encoded column

    @classmethod
    def from_json(cls, ohe: dict, std: dict) -> TowerTransform:
        offset, one_hot = 0, []
        for column, categories in zip(ohe["columns"], ohe["categories"]):
            one_hot.append((column, {str(v): offset + n for n, v in enumerate(categories)}))
            offset += len(categories)
        numeric_start = offset
        offset += len(std["columns"])
        binary = list(ohe.get("binary", []))
        binary_start = offset
        offset += len(binary)
        multi = []
        for column, vocabulary in ohe.get("multi_hot", {}).items():
            multi.append((column, {v: offset + n for n, v in enumerate(vocabulary)}))
            offset += len(vocabulary)
        return cls(one_hot, ohe.get("id_column"), list(std["columns"]), np.asarray(std["mean"], dtype=float),
                   np.asarray(std["scale"], dtype=float), numeric_start, binary, binary_start, multi)

    def _category(self, column: str, value) -> str:
        if column == self.id_column:
            value = canonical_id(value)
        elif isinstance(value, float) and math.isnan(value):
            value = None
        return NULL if value is None else str(value)

    def new_rows(self, rows: Sequence[Mapping]) -> np.ndarray | None:
        """Which rows have an id the model does not know (None without an id column: every row is
        embedded from its features, known or not)."""
        if not self.id_column:
            return None
        index = next(index for column, index in self.one_hot if column == self.id_column)
        return np.array([self._category(self.id_column, r.get(self.id_column)) not in index for r in rows], dtype=bool)

    def apply(self, rows: Sequence[Mapping], weights: np.ndarray) -> np.ndarray:
        """(n, weight columns): each row encoded, times `weights` (a value unseen in training sets
        no column, as the training encoder ignores unknown categories)."""
        out = np.zeros((len(rows), weights.shape[1]))
        for column, index in self.one_hot:
            at = np.array([index.get(self._category(column, r.get(column)), -1) for r in rows], dtype=np.int64)
            known = at >= 0
            out[known] += weights[at[known]]
        if self.numeric:
            values = np.array([[_number(r.get(c)) for c in self.numeric] for r in rows], dtype=float).reshape(
                len(rows), len(self.numeric))
            values = np.where(np.isnan(values), self.mean, values)
            out += ((values - self.mean) / self.scale) @ weights[self.numeric_start:self.numeric_start + len(self.numeric)]
        if self.binary:
            flags = np.array([[_flag(r.get(c)) for c in self.binary] for r in rows], dtype=float).reshape(
                len(rows), len(self.binary))
            bad = [c for n, c in enumerate(self.binary) if not np.isin(flags[:, n], (0.0, 1.0)).all()]
            if bad:
                raise ValueError(f"binary feature(s) {bad} hold values other than 0/1 (declare them numeric)")
            out += flags @ weights[self.binary_start:self.binary_start + len(self.binary)]
        for column, index in self.multi:
            for n, r in enumerate(rows):
                at = [index[t] for t in set(tokens(r.get(column))) if t in index]
                if at:
                    out[n] += weights[at].sum(axis=0)
        return out


def _flag(value) -> float:
    """A 0/1 flag's value as training reads it (`pd.to_numeric(errors="coerce")`, missing is 0)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return 0.0
    return 0.0 if math.isnan(number) else number


@dataclass(frozen=True)
class PublishedModel:
    """A published model's vectors from plain rows (mappings of the spec's column names)."""

    version: str
    spec: RecommenderSpec
    dim: int
    tower_width: int
    ranking: RankingWeights
    users: TowerTransform
    items: TowerTransform
    user_weights: np.ndarray
    item_weights: np.ndarray
    item_counts: dict[str, int]

    @classmethod
    def load(cls, store, version: str | None = None) -> PublishedModel:
        """The model of `version` (default: LATEST), every file checked against the manifest."""
        parts = artifacts.read_model(store, version)
        c, s = parts.config, parts.scalers
        return cls(parts.version, RecommenderSpec(**c["spec"]), c["dim"], c["dim"] - 2 - c.get("als_factors", 0),
                   ranking_weights(c),
                   TowerTransform.from_json(s["user_ohe"], s["user_std_scaler"]),
                   TowerTransform.from_json(s["item_ohe"], s["item_std_scaler"]),
                   parts.user_weights, parts.item_weights, parts.item_counts)

    def user_embeddings(self, users: Sequence[Mapping]) -> np.ndarray:
        """(n, dim) float32 per user row; a row without a known id is embedded from its features."""
        return user_vectors(self.users.apply(users, self.user_weights), self.tower_width, self.ranking,
                            self.users.new_rows(users))

    def item_embeddings(self, items: Sequence[Mapping]) -> np.ndarray:
        """(n, dim) float32 per item row, the popularity prior of its training ratings included."""
        counts = np.array([self.item_counts.get(canonical_id(r.get(self.spec.item_id)), 0) for r in items], dtype=float)
        return item_vectors(self.items.apply(items, self.item_weights), self.tower_width, self.ranking,
                            popularity_prior(counts, self.ranking))
