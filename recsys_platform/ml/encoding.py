"""Encoding a ratings table for the towers: one-hot, standardised, binary and multi-hot features.

`TowerEncoder` is one side's preprocessing (scikit-learn's one-hot encoder and standard scaler,
plus flags and multi-hot lists), exported as plain JSON and rebuilt without unpickling anything.
`encode_training` encodes a training frame once for every fit on it (`TrainingEncoding`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from recsys_platform.ml.published import NULL, canonical_id, tokens
from recsys_platform.ml.spec import RecommenderSpec


def canonical_ids(values: pd.Series) -> pd.Series:
    """Ids as the strings every part compares: a whole number is written without a decimal point
    whatever its dtype (103, 103.0 and "103" are one id), anything else as its string; missing
    stays None."""
    if pd.api.types.is_bool_dtype(values):
        return values.astype(str).astype(object)
    if pd.api.types.is_integer_dtype(values):
        return values.astype("Int64").astype("string").astype(object).where(values.notna(), None)
    if pd.api.types.is_float_dtype(values) and bool((values.dropna() % 1 == 0).all()):
        return values.astype("Int64").astype("string").astype(object).where(values.notna(), None)
    if pd.api.types.infer_dtype(values, skipna=True) == "string":  # already strings (e.g. product codes)
        return values.astype(object).where(values.notna(), None)

    return values.where(values.notna(), None).map(canonical_id).astype(object)


class TowerEncoder:
    """One tower's preprocessing: `ohe` (categoricals, plus the id when hybrid) and `std_scaler`.

    Exported as plain JSON (categories, means, scales) and rebuilt without unpickling anything.
    """

    def __init__(self, categorical: list[str], numeric: list[str], id_column: str | None,
                 binary: list[str] = (), multi: list[str] = ()):
        self.categorical, self.numeric, self.id_column = list(categorical), list(numeric), id_column
        self.binary, self.multi = list(binary), list(multi)
        self.vocabulary: dict[str, list[str]] = {}  # per multi-valued column, the values seen in training
        self.one_hot_columns = self.categorical + ([id_column] if id_column else [])
        self.ohe = OneHotEncoder(handle_unknown="ignore", sparse_output=True, dtype=np.float64)
        self._indexed: tuple[list | None, list[pd.Index]] = (None, [])  # (ohe.categories_, an index of each)
        self.std_scaler = StandardScaler()

    def _strings(self, frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
        out = frame[columns].astype("string").fillna(NULL).astype(object)
        if self.id_column in columns:
            out[self.id_column] = canonical_ids(frame[self.id_column]).fillna(NULL)
        return out

    def _numbers(self, frame: pd.DataFrame) -> np.ndarray:
        values = frame[self.numeric].astype(float).to_numpy()
        return np.where(np.isnan(values), self.std_scaler.mean_, values) if hasattr(self.std_scaler, "mean_") else values

    def _flags(self, frame: pd.DataFrame) -> sp.csr_matrix:
        values = frame[self.binary].apply(pd.to_numeric, errors="coerce").astype(float).fillna(0.0)
        bad = [c for c in self.binary if not values[c].isin([0.0, 1.0]).all()]
        if bad:
            raise ValueError(f"binary feature(s) {bad} hold values other than 0/1 (declare them numeric)")
        return sp.csr_matrix(values.to_numpy())

    def _multi_hot(self, frame: pd.DataFrame) -> sp.csr_matrix:
        blocks = []
        for column in self.multi:
            index = {v: n for n, v in enumerate(self.vocabulary[column])}
            rows, cols = [], []
            for r, value in enumerate(frame[column].tolist()):
                for token in set(tokens(value)):
                    if token in index:  # a value unseen in training is ignored, like an unknown category
                        rows.append(r)
                        cols.append(index[token])
            blocks.append(sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(frame), len(index))))
        return sp.hstack(blocks, format="csr") if blocks else sp.csr_matrix((len(frame), 0))

    def fit(self, frame: pd.DataFrame) -> TowerEncoder:
        self.vocabulary = {c: sorted({t for v in frame[c].tolist() for t in tokens(v)}) for c in self.multi}
        self.ohe.fit(self._strings(frame, self.one_hot_columns))
        if self.numeric:  # a tower may have no numeric feature at all
            numbers = frame[self.numeric].astype(float).to_numpy()
            self.std_scaler.fit(np.where(np.isnan(numbers), np.nanmean(numbers, axis=0), numbers))
        return self

    def _one_hot(self, strings: pd.DataFrame) -> sp.csr_matrix:
        """What `self.ohe.transform(strings)` returns (an unknown value sets no column), by one hash
        lookup per column: sklearn checks each value in Python, 13 s of the training at scale
        1000, where the id columns hold 122,000 users and 110,000 items."""
        if self._indexed[0] is not self.ohe.categories_:  # built once per fit (a fit makes a new list)
            self._indexed = (self.ohe.categories_, [pd.Index(c) for c in self.ohe.categories_])
        rows, columns, offset = [], [], 0
        for column, index in zip(self.one_hot_columns, self._indexed[1]):
            position = index.get_indexer(strings[column])
            known = position >= 0
            rows.append(np.flatnonzero(known))
            columns.append(position[known] + offset)
            offset += len(index)
        rows, columns = (np.concatenate(rows), np.concatenate(columns)) if rows else (np.zeros(0, int),) * 2
        return sp.csr_matrix((np.ones(len(rows)), (rows, columns)), shape=(len(strings), offset))

    def transform(self, frame: pd.DataFrame) -> sp.csr_matrix:
        parts = [self._one_hot(self._strings(frame, self.one_hot_columns))]
        if self.numeric:
            parts.append(sp.csr_matrix(self.std_scaler.transform(self._numbers(frame))))
        if self.binary:
            parts.append(self._flags(frame))
        if self.multi:
            parts.append(self._multi_hot(frame))
        return sp.hstack(parts, format="csr")

    @property
    def id_columns(self) -> slice | None:
        """The id one-hot's columns in `transform`'s output (None without an id column)."""
        if not self.id_column:
            return None
        start = sum(len(c) for c in self.ohe.categories_[:-1])  # the id is the last one-hot column
        return slice(start, start + len(self.ohe.categories_[-1]))

    @property
    def feature_columns(self) -> np.ndarray:
        """Every other column of `transform`'s output: the features."""
        ids, columns = self.id_columns, np.arange(self.width)
        return columns if ids is None else np.r_[columns[:ids.start], columns[ids.stop:]]

    @property
    def width(self) -> int:
        return (sum(len(c) for c in self.ohe.categories_) + len(self.numeric) + len(self.binary)
                + sum(len(v) for v in self.vocabulary.values()))

    def to_json(self) -> tuple[dict, dict]:
        """(`ohe`, `std_scaler`) parameters as JSON-safe dicts."""
        ohe = {"columns": self.one_hot_columns, "id_column": self.id_column,
               "categories": [[str(v) for v in c] for c in self.ohe.categories_],
               "binary": self.binary, "multi_hot": self.vocabulary}
        fitted = bool(self.numeric)
        std = {"columns": self.numeric, "mean": self.std_scaler.mean_.tolist() if fitted else [],
               "scale": self.std_scaler.scale_.tolist() if fitted else []}
        return ohe, std

    @classmethod
    def from_json(cls, ohe: dict, std: dict) -> TowerEncoder:
        id_column = ohe.get("id_column")
        categorical = [c for c in ohe["columns"] if c != id_column]
        multi = ohe.get("multi_hot", {})
        enc = cls(categorical, std["columns"], id_column, ohe.get("binary", []), list(multi))
        enc.vocabulary = {c: list(v) for c, v in multi.items()}
        enc.ohe.categories = [np.array(c, dtype=object) for c in ohe["categories"]]
        enc.ohe.fit(pd.DataFrame({c: pd.Series(v[:1] or [NULL], dtype=object)
                                  for c, v in zip(ohe["columns"], ohe["categories"])}))
        if std["columns"]:
            enc.std_scaler.mean_ = np.array(std["mean"], dtype=float)
            enc.std_scaler.scale_ = np.array(std["scale"], dtype=float)
            enc.std_scaler.var_ = enc.std_scaler.scale_ ** 2
            enc.std_scaler.n_features_in_ = len(std["columns"])
        return enc


@dataclass(eq=False, repr=False)  # holds whole frames and matrices: compared and shown by identity
class TrainingEncoding:
    """A training frame encoded: its users and items (in the order of their first rating), their
    encodings by the encoders fitted on them, each rating's user and item row, and the ratings.
    `encode_training` makes it; every fit on the same frame can share it (the alternating
    solver's per-side structures are built once and kept in `sides`, `solvers.tower_sides`)."""

    users: pd.DataFrame
    items: pd.DataFrame
    xu: sp.csr_matrix
    xi: sp.csr_matrix
    u_index: np.ndarray
    i_index: np.ndarray
    ratings: np.ndarray
    user_encoder: TowerEncoder
    item_encoder: TowerEncoder
    item_counts: dict[str, int]  # ratings per item id (the popularity prior's counts)
    with_ids: bool               # encoded with the id columns
    sides: tuple | None = None   # the alternating solver's two sides, once built (they do not depend on L2)

    @property
    def global_mean(self) -> float:
        return float(self.ratings.mean())

    @property
    def target(self) -> np.ndarray:
        return self.ratings - self.global_mean


def training_rows(spec: RecommenderSpec, frame: pd.DataFrame):
    """The training rows (users, items, in the order of their first rating) and each rating's
    user and item row: the order the towers and the collaborative factors share."""
    users = frame[spec.user_columns()].drop_duplicates(spec.user_id)
    items = frame[spec.item_columns()].drop_duplicates(spec.item_id)
    u_index = pd.Index(users[spec.user_id]).get_indexer(frame[spec.user_id])
    i_index = pd.Index(items[spec.item_id]).get_indexer(frame[spec.item_id])
    return users, items, u_index, i_index


def encode_training(spec: RecommenderSpec, frame: pd.DataFrame, with_ids: bool) -> TrainingEncoding:
    """`frame`'s rows and ratings encoded by encoders fitted on it (with each side's id column
    one-hot too when `with_ids`): what every fit on `frame` shares."""
    missing = [c for c in {*spec.user_columns(), *spec.item_columns(), spec.rating} if c not in frame.columns]
    if missing:
        raise ValueError(f"training data lacks columns {sorted(missing)}")
    if frame.empty:
        raise ValueError("training data is empty")
    rows = training_rows(spec, frame)
    user_encoder = TowerEncoder(spec.user_categorical, spec.user_numeric, spec.user_id if with_ids else None,
                                spec.user_binary, spec.user_multi).fit(rows[0])
    item_encoder = TowerEncoder(spec.item_categorical, spec.item_numeric, spec.item_id if with_ids else None,
                                spec.item_binary, spec.item_multi).fit(rows[1])
    counts = {str(k): int(v) for k, v in canonical_ids(frame[spec.item_id]).value_counts().items()}
    return _encoded(spec, frame, rows, user_encoder, item_encoder, counts)


def encode_with(spec: RecommenderSpec, frame: pd.DataFrame, user_encoder: TowerEncoder, item_encoder: TowerEncoder,
                item_counts: dict[str, int]) -> TrainingEncoding:
    """`frame` encoded by encoders fitted already (a fitted model's own)."""
    return _encoded(spec, frame, training_rows(spec, frame), user_encoder, item_encoder, item_counts)


def _encoded(spec, frame, rows, user_encoder: TowerEncoder, item_encoder: TowerEncoder,
             item_counts: dict[str, int]) -> TrainingEncoding:
    users, items, u_index, i_index = rows
    return TrainingEncoding(users, items, user_encoder.transform(users), item_encoder.transform(items),
                            u_index, i_index, frame[spec.rating].astype(float).to_numpy(), user_encoder,
                            item_encoder, item_counts, user_encoder.id_column is not None)
