"""A two-tower recommender on scikit-learn preprocessing, trainable on any ratings table.

Each tower maps features (one-hot categoricals, standardised numerics and, in hybrid mode, a
one-hot id) linearly to an embedding. Embeddings are built so that their inner product *is* the
predicted rating minus the global mean: user = [tower_u(x), bias_u(x), 1] and item =
[tower_i(x), 1, bias_i(x)]. So an inner-product ANN index ranks items exactly as the model does,
and a customer or product never seen in training is embedded from its features (its id column
is simply unknown to the one-hot encoder).

Training minimises squared error with L2 over the whole table (deterministic for a seed), by
alternating closed-form solves of one tower with the other fixed (`_alternate`, the default), or
by L-BFGS over both towers at once (`solver="lbfgs"`). With `als_factors > 0` (the asset's
default: 16 of 32) the vectors also carry implicit-ALS factors of the ratings as feedback, known
rows exactly and unknown rows predicted from their features, weighted in the ranking score by
`als_weight` (see `_fit_collaborative`, docs/ml.md). On large tables the alternating solver's
per-row systems run in compiled kernels (`kernels`, numba); small ones stay on numpy.
No Dagster or AWS import: the Lambdas, the assets and the benchmarks share this module.

Example, on any dataset:

    >>> spec = TwoTowerSpec(user_id="user", item_id="movie", rating="stars",
    ...                     user_categorical=["country"], user_numeric=["age"],
    ...                     item_categorical=["genre"], item_numeric=["year"])
    >>> model = TwoTowerRecommender(spec, dim=32).fit(frame)          # a pandas DataFrame
    >>> model.predict(frame.head())                                    # ratings
    >>> model.user_embeddings(users_frame), model.item_embeddings(items_frame)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd
import scipy.optimize
import scipy.sparse as sp
from sklearn.preprocessing import OneHotEncoder, StandardScaler


@dataclass(frozen=True)
class TwoTowerSpec:
    """Which columns are ids, the rating, and each tower's features."""

    user_id: str = "customerNumber"
    item_id: str = "productCode"
    rating: str = "productRating"
    user_categorical: list[str] = field(default_factory=lambda: ["city", "country"])
    user_numeric: list[str] = field(default_factory=lambda: ["creditLimit"])
    item_categorical: list[str] = field(default_factory=lambda: ["productLine", "productScale"])
    item_numeric: list[str] = field(default_factory=lambda: ["quantityInStock", "buyPrice", "MSRP"])
    # 0/1 flags, used as they are (standardising a rare flag would turn its 1 into ~29)
    user_binary: list[str] = field(default_factory=list)
    item_binary: list[str] = field(default_factory=list)
    # multi-valued features (multi-hot): a list per row, or one string of "|"-separated values
    user_multi: list[str] = field(default_factory=list)
    item_multi: list[str] = field(default_factory=list)

    def user_columns(self) -> list[str]:
        return [self.user_id, *self.user_categorical, *self.user_numeric, *self.user_binary, *self.user_multi]

    def item_columns(self) -> list[str]:
        return [self.item_id, *self.item_categorical, *self.item_numeric, *self.item_binary, *self.item_multi]


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

    def one(v):
        if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA:
            return None
        if isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)):
            return str(int(v))
        if isinstance(v, (float, np.floating)) and float(v).is_integer():
            return str(int(v))
        return str(v)

    return values.map(one).astype(object)


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
        out = frame[columns].astype("string").fillna("<null>").astype(object)
        if self.id_column in columns:
            out[self.id_column] = canonical_ids(frame[self.id_column]).fillna("<null>")
        return out

    def _numbers(self, frame: pd.DataFrame) -> np.ndarray:
        values = frame[self.numeric].astype(float).to_numpy()
        return np.where(np.isnan(values), self.std_scaler.mean_, values) if hasattr(self.std_scaler, "mean_") else values

    @staticmethod
    def _tokens(value) -> list[str]:
        if value is None or (isinstance(value, float) and np.isnan(value)):
            return []
        if isinstance(value, str):
            return [t.strip() for t in value.split("|") if t.strip()]
        if isinstance(value, (list, tuple, set, frozenset, np.ndarray)):
            return [str(t) for t in value]
        return [str(value)]

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
                for token in set(self._tokens(value)):
                    if token in index:  # a value unseen in training is ignored, like an unknown category
                        rows.append(r)
                        cols.append(index[token])
            blocks.append(sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(frame), len(index))))
        return sp.hstack(blocks, format="csr") if blocks else sp.csr_matrix((len(frame), 0))

    def fit(self, frame: pd.DataFrame) -> TowerEncoder:
        self.vocabulary = {c: sorted({t for v in frame[c].tolist() for t in self._tokens(v)}) for c in self.multi}
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
        enc.ohe.fit(pd.DataFrame({c: pd.Series(v[:1] or ["<null>"], dtype=object)
                                  for c, v in zip(ohe["columns"], ohe["categories"])}))
        if std["columns"]:
            enc.std_scaler.mean_ = np.array(std["mean"], dtype=float)
            enc.std_scaler.scale_ = np.array(std["scale"], dtype=float)
            enc.std_scaler.var_ = enc.std_scaler.scale_ ** 2
            enc.std_scaler.n_features_in_ = len(std["columns"])
        return enc


SOLVERS = {"alternating": 1e-3, "lbfgs": 1e-7}  # each solver's default relative tolerance (`ftol`)
# From this many ratings, `_TowerSide` solves with the compiled kernels (`kernels`, numba): they
# take a third of numpy's time per solve at scale 1000 but cost ~1 s to load in each process, more
# than a whole fit of a small table.
COMPILED_MIN_RATINGS = 100_000


def _row_products(x: sp.csr_matrix) -> sp.csr_matrix:
    """(columns^2, rows): entry (a * columns + b, r) = x[r, a] * x[r, b], from each row's non-zeros
    (a row-wise Kronecker product of `x` with itself, transposed)."""
    x = x.tocsr()
    x.sum_duplicates()
    counts = np.diff(x.indptr)
    row_of = np.repeat(np.arange(x.shape[0]), counts)          # each non-zero's row
    per = counts[row_of]                                         # partners of each non-zero
    first = np.repeat(np.arange(x.nnz), per)
    offsets = np.arange(int(per.sum())) - np.repeat(np.cumsum(per) - per, per)
    second = x.indptr[row_of[first]] + offsets
    width = x.shape[1]
    return sp.csr_matrix((x.data[first] * x.data[second], (x.indices[first] * width + x.indices[second], row_of[first])),
                         shape=(width * width, x.shape[0]))


class _TowerSide:
    """One tower's rows (users or items) as `_alternate` solves them.

    Row r's embedding is e_r = x_r W = c_r + z_r: c_r from its feature columns (weights F, shared)
    and z_r from its own id column (hybrid mode). With the other tower fixed, each rating n of row
    r is a linear function a_n . e_r of it (a_n: the other side's tower, then 1 for this side's
    bias), to fit to t_n (the target minus the other side's bias). Per row, A_r = sum a_n a_n^T
    and b_r = sum a_n t_n. With L = diag(l2 per column), minimising over z_r gives
    z_r = P_r (b_r - A_r c_r), P_r = (A_r + L)^-1; put back, the loss in F alone is quadratic with
    Hessian sum_r x_r x_r^T (kron) (L - L P_r L) + L and gradient term sum_r x_r (kron) L P_r b_r,
    so F is one small dense solve (features x dims), then every z_r a batched one. Without id
    columns (hybrid=False) the per-row terms are A_r and b_r themselves. The per-row work runs
    in numpy (`_row_terms`, `_hessian`, `_own_and_error`) or, from COMPILED_MIN_RATINGS
    ratings, in the compiled `kernels` (the same numbers, a third of the time at scale 1000).
    """

    def __init__(self, x: sp.csr_matrix, index: np.ndarray, encoder: TowerEncoder, other_index: np.ndarray,
                 target: np.ndarray, compiled: bool | None = None):
        """`x`: the rows as `encoder` encodes them; `index`: each rating's row; `other_index`:
        each rating's row on the other side; `target`: each rating's value to fit; `compiled`:
        solve with `kernels` (None: when there are at least COMPILED_MIN_RATINGS ratings)."""
        x = x.tocsr()
        self.rows, self.width = x.shape[0], x.shape[1]
        ids, self.feature_columns = encoder.id_columns, encoder.feature_columns
        self.hybrid = ids is not None
        if self.hybrid:
            own = x[:, ids].tocsr()
            if not (np.diff(own.indptr) == 1).all():
                raise ValueError("every training row needs its own id column")
            self.id_of_row = ids.start + own.indices  # each row's id column
        self.features = x[:, self.feature_columns].tocsr()
        self.features.sum_duplicates()  # one entry per column and row (the kernels count each pair once)
        self.compiled = len(index) >= COMPILED_MIN_RATINGS if compiled is None else compiled
        per_row = np.bincount(index, minlength=self.rows)
        if self.compiled:  # ratings ordered by row, as `kernels` read them (int64: one compiled signature)
            from recsys_platform.ml import kernels

            order = np.argsort(index, kind="stable")
            self.indptr = np.r_[0, np.cumsum(per_row)].astype(np.int64)
            self.bounds = kernels.chunk_bounds(self.indptr, kernels.numba.get_num_threads())  # a chunk a thread
            self.features.indptr = self.features.indptr.astype(np.int64)
            self.features.indices = self.features.indices.astype(np.int64)
            self.other_index = other_index[order].astype(np.int64)
            self.target = np.ascontiguousarray(target[order], dtype=np.float64)
            return
        self.pairs = _row_products(self.features)
        # ratings ordered by their row's rating count, then row: one group per count (`_moments`)
        order = np.lexsort((index, per_row[index]))
        # every per-rating array is kept in that order: one gather per solve, none per sweep
        self.other_index, self.target = other_index[order], target[order]
        rows_by_count = np.lexsort((np.arange(self.rows), per_row))
        rows_by_count = rows_by_count[per_row[rows_by_count] > 0]
        self.groups, lo = [], 0
        for count in np.unique(per_row[rows_by_count]):
            rows = rows_by_count[per_row[rows_by_count] == count]
            hi = lo + len(rows) * int(count)
            self.groups.append((lo, hi, int(count), rows))
            lo = hi

    def _moments(self, a: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """A_r and b_r per row (`a`, `t` in the order `__init__` sorted the ratings), as batched
        matrix products over the rows that have the same number of ratings (no outer product per
        rating is ever materialised)."""
        dims = a.shape[1]
        big_a, b = np.empty((self.rows, dims, dims)), np.empty((self.rows, dims))
        for lo, hi, count, rows in self.groups:
            block = a[lo:hi].reshape(len(rows), count, dims)
            big_a[rows] = np.matmul(block.transpose(0, 2, 1), block)
            b[rows] = np.matmul(block.transpose(0, 2, 1), t[lo:hi].reshape(len(rows), count, 1))[:, :, 0]
        return big_a, b

    def _row_terms(self, other: np.ndarray, reg: np.ndarray):
        """Per row: A_r, b_r, P_r (hybrid only), the Hessian's and the gradient's terms, and the
        sum of every rating's t^2 (numpy: batched products and `np.linalg.inv`)."""
        k = len(reg) - 1
        a = other[self.other_index]      # each rating's other tower and bias, in that order
        t = self.target - a[:, k]
        a[:, k] = 1.0                    # the coefficient of this side's bias
        big_a, b = self._moments(a, t)
        if not self.hybrid:
            return big_a, b, None, big_a, b, float(t @ t)
        p = np.linalg.inv(big_a + np.diag(reg))
        per_row = np.multiply(p, -np.outer(reg, reg))              # L - L P L: one new array,
        per_row += np.diag(reg)                                     # the diagonal added in place
        return big_a, b, p, per_row, reg * np.einsum("rij,rj->ri", p, b), float(t @ t)

    def _hessian(self, per_row: np.ndarray) -> np.ndarray:
        """sum_r x_r x_r^T (kron) S_r as (features x dims) squared, in one product:
        (feature pairs x rows) @ (rows x dims^2)."""
        d, dims = self.features.shape[1], per_row.shape[1]
        hessian = (self.pairs @ per_row.reshape(self.rows, dims * dims)).reshape(d, d, dims, dims)
        return hessian.transpose(0, 2, 1, 3).reshape(d * dims, d * dims)

    def _own_and_error(self, p, big_a, b, embeddings) -> tuple[np.ndarray | None, float]:
        """Each row's own part P_r (b_r - A_r c_r) (None unless hybrid) and, with it added, the
        sum over rows of e A_r e - 2 e b_r."""
        own = np.einsum("rij,rj->ri", p, b - np.einsum("rij,rj->ri", big_a, embeddings)) if self.hybrid else None
        e = embeddings if own is None else embeddings + own
        return own, float(np.einsum("ri,rij,rj->", e, big_a, e) - 2 * np.einsum("ri,ri->", e, b))

    def solve(self, other: np.ndarray, reg: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """This tower's weights (columns x dims), its rows' embeddings, and the squared error of
        every rating with them, the other side fixed (`other`: the other side's row embeddings).
        The error comes from the moments, sum_r (e_r A_r e_r - 2 e_r b_r) + t.t, so no
        prediction per rating is formed."""
        x, dims, d = self.features, len(reg), self.features.shape[1]
        if self.compiled:
            from recsys_platform.ml import kernels

            big_a, b, p, hessian, gradient, squares = kernels.row_systems(
                np.ascontiguousarray(other, dtype=np.float64), self.other_index, self.target, self.indptr,
                np.asarray(reg, dtype=np.float64), self.hybrid, x.indptr, x.indices, x.data, d, self.bounds)
            hessian = hessian.reshape(d * dims, d * dims)
        else:
            big_a, b, p, per_row, rhs_row, squares = self._row_terms(other, reg)
            hessian, gradient = self._hessian(per_row), x.T @ rhs_row
        hessian += np.diag(np.tile(reg, d))
        features = np.linalg.solve(hessian, gradient.ravel()).reshape(d, dims)
        embeddings = x @ features
        if self.compiled:
            own, error = kernels.own_and_error(p, big_a, b, embeddings, self.hybrid)
        else:
            own, error = self._own_and_error(p, big_a, b, embeddings)
        weights = np.zeros((self.width, dims))
        weights[self.feature_columns] = features
        if self.hybrid:
            weights[self.id_of_row] = own
            embeddings += own
        return weights, embeddings, float(error + squares)


@dataclass(eq=False, repr=False)  # holds whole frames and matrices: compared and shown by identity
class TrainingEncoding:
    """A training frame encoded: its users and items (in the order of their first rating), their
    encodings by the encoders fitted on them, each rating's user and item row, and the ratings.
    `TwoTowerRecommender.encode_training` makes it; every fit on the same frame can share it."""

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
    hybrid: bool                 # encoded with the id columns
    _sides: tuple[_TowerSide, _TowerSide] | None = None

    @property
    def global_mean(self) -> float:
        return float(self.ratings.mean())

    @property
    def target(self) -> np.ndarray:
        return self.ratings - self.global_mean

    def sides(self) -> tuple[_TowerSide, _TowerSide]:
        """The alternating solver's user and item sides (built once: they do not depend on L2)."""
        if self._sides is None:
            target = self.target
            self._sides = (_TowerSide(self.xu, self.u_index, self.user_encoder, self.i_index, target),
                           _TowerSide(self.xi, self.i_index, self.item_encoder, self.u_index, target))
        return self._sides


class TwoTowerRecommender:
    """Fit on a ratings table; embed users and items; predict ratings."""

    def __init__(self, spec: TwoTowerSpec | None = None, dim: int = 32, hybrid: bool = True,
                 l2: float = 80.0, max_iter: int = 2000, seed: int = 0, ftol: float | None = None,
                 als_factors: int = 0, als_regularization: float = 0.1, als_alpha: float = 10.0,
                 als_iterations: int = 30, feature_ridge: float = 1.0, bias_l2: float | None = 5.0,
                 solver: str = "alternating"):
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {sorted(SOLVERS)}, got {solver!r}")
        if dim - als_factors < 4:
            raise ValueError(f"dim must leave at least 4 dimensions beside the {als_factors} collaborative ones "
                             f"(2 carry the biases), got {dim}")
        self.spec = spec or TwoTowerSpec()
        self.dim, self.hybrid, self.l2, self.max_iter, self.seed = dim, hybrid, l2, max_iter, seed
        # How the towers are fitted (the same objective either way): "alternating" solves one tower
        # exactly while the other is fixed (closed form, `_alternate`); "lbfgs" moves both at once.
        # `max_iter` counts sweeps or L-BFGS iterations; training stops when one lowers the loss by
        # less than `ftol` (relative; default per solver).
        self.solver = solver
        self.ftol = SOLVERS[solver] if ftol is None else ftol
        # As in scikit-learn: the alternating solver starts from the item tower of the previous
        # fit (on the same rows) instead of random weights. `evaluation.choose_l2` uses it.
        self.warm_start = False
        # The collaborative part (docs/ml.md): implicit ALS factors of the ratings as confidence,
        # `als_factors` of the `dim` dimensions, mapped from features by ridge for cold rows.
        self.als_factors, self.als_regularization, self.als_alpha = als_factors, als_regularization, als_alpha
        self.als_iterations, self.feature_ridge = als_iterations, feature_ridge
        # The bias columns' own L2 (None: `l2`). Defaults l2=80, bias_l2=5, chosen on the validation
        # split of both seed modes (docs/ml.md): 20/20 lost to the bias baseline's RMSE on collaborative data.
        self.bias_l2 = l2 if bias_l2 is None else bias_l2
        self.als_weight = 0.0  # its weight in the ranking score, chosen on validation (evaluation.choose_blend)
        # Ranking only: each item's factors are divided by their norm to this power (0: as ALS
        # gives them; 1: their direction alone). An item's factor norm grows with its ratings, so
        # it is a second popularity term that puts the same items on every list; chosen on
        # validation with the weights (evaluation.choose_blend) to reach the coverage floor.
        self.als_norm_power = 0.0
        self.k = dim - 2 - als_factors  # the rest of the vector carries the two biases
        self.global_mean = 0.0
        self.user_encoder: TowerEncoder | None = None
        self.item_encoder: TowerEncoder | None = None
        self.user_weights: np.ndarray | None = None  # (du, k + 1): tower and bias
        self.item_weights: np.ndarray | None = None
        self.training_log: list[float] = []
        self.converged = False    # training stopped on its tolerance, not on max_iter
        self.iterations = 0
        # Ranking only: ratings exist only for purchases, so what users buy next follows item
        # popularity, which a rating regression cannot see. A prior weight chosen on validation
        # data (evaluation.choose_popularity_weight) folds it into the item bias dimension.
        self.popularity_weight = 0.0
        self.item_counts: dict[str, int] = {}

    # -- training ---------------------------------------------------------------------------
    def fit(self, frame: pd.DataFrame, collaborative: bool = True,
            encoded: TrainingEncoding | None = None) -> TwoTowerRecommender:
        """Fit the towers on `frame`, then (with `als_factors` and `collaborative`) the
        collaborative part. The towers alone already predict ratings: `evaluation.choose_l2`
        compares them on validation RMSE and adds the collaborative part once, to the best.
        `encoded`: `encode_training(frame)` if it ran already (fits on one frame share it; the
        model then trains on the encoding and its encoders, and `frame` is not read again)."""
        encoded = encoded or self.encode_training(frame)
        if encoded.hybrid != self.hybrid:
            raise ValueError(f"the training encoding was made for hybrid={encoded.hybrid}, the model is {self.hybrid}")
        self.user_encoder, self.item_encoder = encoded.user_encoder, encoded.item_encoder
        self.global_mean = encoded.global_mean
        self.item_counts = encoded.item_counts
        if self.solver == "alternating":
            self._alternate(*encoded.sides(), encoded.xi)
        else:
            self._optimise(encoded.xu, encoded.xi, encoded.u_index, encoded.i_index, encoded.target)
        if collaborative and self.als_factors:
            self._fit_collaborative(encoded)
        return self

    def encode_training(self, frame: pd.DataFrame) -> TrainingEncoding:
        """`frame`'s rows and ratings encoded by encoders fitted on it: what every fit on
        `frame` shares (`choose_l2` encodes once for all the L2 values it tries)."""
        s = self.spec
        missing = [c for c in {*s.user_columns(), *s.item_columns(), s.rating} if c not in frame.columns]
        if missing:
            raise ValueError(f"training data lacks columns {sorted(missing)}")
        if frame.empty:
            raise ValueError("training data is empty")
        return self._encoding(frame, fit=True)

    def _encoding(self, frame: pd.DataFrame, fit: bool) -> TrainingEncoding:
        """`frame` encoded by encoders fitted on it (`fit`) or by this model's own."""
        s = self.spec
        users, items, u_index, i_index = self._rows(frame)
        if fit:
            user_encoder = TowerEncoder(s.user_categorical, s.user_numeric, s.user_id if self.hybrid else None,
                                        s.user_binary, s.user_multi).fit(users)
            item_encoder = TowerEncoder(s.item_categorical, s.item_numeric, s.item_id if self.hybrid else None,
                                        s.item_binary, s.item_multi).fit(items)
        else:
            user_encoder, item_encoder = self.user_encoder, self.item_encoder
        counts = ({str(k): int(v) for k, v in canonical_ids(frame[s.item_id]).value_counts().items()} if fit
                  else self.item_counts)
        return TrainingEncoding(users, items, user_encoder.transform(users), item_encoder.transform(items),
                                u_index, i_index, frame[s.rating].astype(float).to_numpy(), user_encoder,
                                item_encoder, counts, self.hybrid)

    def _rows(self, frame: pd.DataFrame):
        """The training rows (users, items, in the order of their first rating) and each rating's
        user and item row: the order the towers and the ALS factors share."""
        s = self.spec
        users = frame[s.user_columns()].drop_duplicates(s.user_id)
        items = frame[s.item_columns()].drop_duplicates(s.item_id)
        u_index = pd.Index(users[s.user_id]).get_indexer(frame[s.user_id])
        i_index = pd.Index(items[s.item_id]).get_indexer(frame[s.item_id])
        return users, items, u_index, i_index

    def fit_collaborative(self, frame: pd.DataFrame, factors: tuple[np.ndarray, np.ndarray] | None = None,
                          encoded: TrainingEncoding | None = None) -> TwoTowerRecommender:
        """Add the collaborative part (nothing without `als_factors`) to towers fitted on the
        same `frame`; it does not depend on them, nor on their L2. `factors`: what
        `collaborative_factors(frame)` returned, if it ran already (e.g. beside the towers' fits);
        `encoded`: the encoding the towers were fitted on, if kept."""
        if not self.als_factors:
            return self
        self._check_fitted()
        if self.user_weights.shape[1] != self.k + 1:
            raise RuntimeError("the collaborative part is already fitted: fit() the towers again first")
        if encoded is None:
            encoded = self._encoding(frame, fit=False)
        elif encoded.user_encoder is not self.user_encoder or encoded.item_encoder is not self.item_encoder:
            raise ValueError("the encoding given is not the one these towers were fitted on")
        if factors is not None and (len(factors[0]), len(factors[1])) != (encoded.xu.shape[0], encoded.xi.shape[0]):
            raise ValueError(f"factors for {len(factors[0])} users and {len(factors[1])} items given, but the frame "
                             f"has {encoded.xu.shape[0]} and {encoded.xi.shape[0]}: pass collaborative_factors(frame) "
                             "of the same frame")
        self._fit_collaborative(encoded, factors)
        return self

    def collaborative_factors(self, frame: pd.DataFrame, threads: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Implicit-ALS factors of `frame`'s ratings, (users, items) in the order of their first
        rating, as `fit_collaborative(frame, factors=...)` takes them, on `threads` threads (0:
        every core; the factors are the same either way). Needs no fitted tower: it can run while
        the towers are fitted (`evaluation.choose_l2` does, in a thread)."""
        users, items, u_index, i_index = self._rows(frame)
        return self._als_factors(u_index, i_index, frame[self.spec.rating].astype(float).to_numpy(),
                                 len(users), len(items), threads)

    def _fit_collaborative(self, encoded: TrainingEncoding, factors=None) -> None:
        """Attach `factors` (the ALS factors of the encoded ratings; computed here if None)."""
        e = encoded
        if factors is None:
            factors = self._als_factors(e.u_index, e.i_index, e.ratings, e.xu.shape[0], e.xi.shape[0])
        self._attach_factors(e.users, e.items, e.xu, e.xi, *factors)

    def _als_factors(self, u_index, i_index, ratings, n_users: int, n_items: int,
                     threads: int = 0) -> tuple[np.ndarray, np.ndarray]:
        import warnings

        import implicit

        confidence = 1.0 + self.als_alpha * ratings
        matrix = sp.csr_matrix((confidence, (u_index, i_index)), shape=(n_users, n_items))
        # implicit warns unless BLAS runs one thread. Measured here (16 factors, scale 1000): the
        # fit takes 9.3 s with OpenBLAS's 2 threads, 10.2 s limited to 1, with identical factors;
        # and the limit is process-wide, so it would halve the speed of the towers' batched
        # inverses while `choose_l2` fits them beside this (0.74 s -> 1.69 s per call at scale 1000).
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*BLAS is configured to use", category=RuntimeWarning)
            als = implicit.cpu.als.AlternatingLeastSquares(
                factors=self.als_factors, regularization=self.als_regularization, iterations=self.als_iterations,
                random_state=self.seed, calculate_training_loss=False, num_threads=threads)
        als.fit(matrix, show_progress=False)
        return als.user_factors, als.item_factors

    def _attach_factors(self, users, items, xu, xi, user_factors: np.ndarray, item_factors: np.ndarray) -> None:
        """ALS factors for the training users and items, appended to the towers' weights so that
        the tower of a known row returns its factors exactly and the tower of an unknown row
        returns what its features predict (a ridge regression from the features to the factors):
        weights = [ridge coefficients on feature columns; residual factors on each id's column]."""
        s = self.spec
        parts = []
        for encoder, id_column, rows, x, factors in ((self.user_encoder, s.user_id, users, xu, user_factors),
                                                     (self.item_encoder, s.item_id, items, xi, item_factors)):
            cold = encoder.transform(rows.assign(**{id_column: None}))  # features only: id columns zero
            keep = encoder.feature_columns
            features = cold[:, keep]  # the ridge is over feature columns only (an id column is all zero here)
            gram = (features.T @ features).toarray() + self.feature_ridge * np.eye(len(keep))
            coef = np.zeros((cold.shape[1], factors.shape[1]))
            coef[keep] = np.linalg.solve(gram, features.T @ factors)
            residual = factors - features @ coef[keep]
            parts.append(coef + (x - cold).T @ residual)  # (x - cold) is each row's id one-hot
        self.user_weights = np.hstack([self.user_weights, parts[0]])
        self.item_weights = np.hstack([self.item_weights, parts[1]])

    def _alternate(self, user_side: _TowerSide, item_side: _TowerSide, xi: sp.csr_matrix) -> None:
        """Alternating exact minimisation of the training objective: with one tower fixed, the other's
        weights solve a linear least-squares problem in closed form, so each sweep (user tower,
        then item tower) lowers the loss and needs no step size. `_TowerSide` has the algebra."""
        rng = np.random.default_rng(self.seed)
        k, n = self.k, len(user_side.target)
        reg = np.r_[np.full(k, self.l2), self.bias_l2]  # per embedding column: tower, then bias
        wi = rng.normal(0, 0.1, (xi.shape[1], k + 1))
        if self.warm_start and self.item_weights is not None and self.item_weights.shape[0] == xi.shape[1]:
            wi = self.item_weights[:, : k + 1]  # the towers of the previous fit (same encoders): sklearn's warm_start
        ei = xi @ wi
        self.training_log, self.converged, self.iterations = [], False, 0
        previous = np.inf
        for sweep in range(1, self.max_iter + 1):
            wu, eu, _ = user_side.solve(ei, reg)
            wi, ei, squared_error = item_side.solve(eu, reg)  # the error at this sweep's end
            loss = 0.5 * squared_error / n + 0.5 / n * float((reg * wu * wu).sum() + (reg * wi * wi).sum())
            self.training_log.append(loss)
            self.iterations = sweep
            if sweep > 1 and previous - loss <= self.ftol * abs(previous):
                self.converged = True
                break
            previous = loss
        self.user_weights, self.item_weights = wu, wi

    def _optimise(self, xu, xi, u_index, i_index, target) -> None:
        rng = np.random.default_rng(self.seed)
        du, di, k = xu.shape[1], xi.shape[1], self.k
        n = len(target)
        # Gather matrices turn per-user gradients into per-rating ones (and back) in one product.
        gu = sp.csr_matrix((np.ones(n), (np.arange(n), u_index)), shape=(n, xu.shape[0]))
        gi = sp.csr_matrix((np.ones(n), (np.arange(n), i_index)), shape=(n, xi.shape[0]))
        ru, ri = (gu @ xu).tocsr(), (gi @ xi).tocsr()  # features of each rating's user and item
        sizes = (du * (k + 1), di * (k + 1))
        self.training_log = []
        # Per-parameter L2: the bias column of each tower may be regularised apart from the tower.
        reg = np.concatenate([np.tile(np.r_[np.full(k, self.l2), self.bias_l2], du),
                              np.tile(np.r_[np.full(k, self.l2), self.bias_l2], di)])

        def unpack(theta):
            return theta[: sizes[0]].reshape(du, k + 1), theta[sizes[0]:].reshape(di, k + 1)

        def loss_and_grad(theta):
            wu, wi = unpack(theta)
            eu, ei = ru @ wu, ri @ wi  # (n, k + 1): embedding then bias
            pred = np.einsum("nk,nk->n", eu[:, :k], ei[:, :k]) + eu[:, k] + ei[:, k]
            err = pred - target
            loss = 0.5 * float(err @ err) / n + 0.5 / n * float(reg @ (theta * theta))
            d_eu = np.empty_like(eu)
            d_ei = np.empty_like(ei)
            d_eu[:, :k] = err[:, None] * ei[:, :k]
            d_ei[:, :k] = err[:, None] * eu[:, :k]
            d_eu[:, k] = err
            d_ei[:, k] = err
            grad = np.concatenate([(ru.T @ d_eu).ravel(), (ri.T @ d_ei).ravel()]) / n + reg / n * theta
            self.training_log.append(loss)
            return loss, grad

        theta0 = rng.normal(0, 0.1, sizes[0] + sizes[1])
        # Stops when an iteration lowers the loss by less than `ftol` (relative) or the gradient
        # vanishes; `max_iter` is a safety net, and `converged` says which ended the training.
        # ftol 1e-7 at scale 10: 786 iterations, the last 30 lower the loss by 0.003% (a fixed
        # 300 stopped while it still fell 1.5-4.9%); 1e-6 stops at 530 with RMSE 0.0004 worse.
        result = scipy.optimize.minimize(loss_and_grad, theta0, jac=True, method="L-BFGS-B",
                                         options={"maxiter": self.max_iter, "maxfun": 2 * self.max_iter, "ftol": self.ftol})
        self.user_weights, self.item_weights = unpack(result.x)
        self.converged, self.iterations = bool(result.success), int(result.nit)

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

    def user_embeddings(self, users: pd.DataFrame, features_only: bool = False) -> np.ndarray:
        """(n, dim) float32: [tower, bias, 1, als_weight * factors] per user row. A row whose id
        is None or unseen is embedded from its features (a new customer)."""
        self._check_fitted()
        users = self._with_id(users, self.spec.user_id, features_only)
        e = self.user_encoder.transform(users) @ self.user_weights
        k = self.k
        return np.hstack([e[:, :k], e[:, k:k + 1], np.ones((len(users), 1)),
                          self.als_weight * e[:, k + 1:]]).astype(np.float32)

    def _item_parts(self, items: pd.DataFrame, features_only: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        self._check_fitted()
        items = self._with_id(items, self.spec.item_id, features_only)
        e = self.item_encoder.transform(items) @ self.item_weights
        factors = e[:, self.k + 1:]
        if self.als_norm_power and factors.shape[1]:
            norms = np.linalg.norm(factors, axis=1, keepdims=True)
            factors = factors / np.maximum(norms, 1e-9) ** self.als_norm_power
        return e[:, : self.k], e[:, self.k], factors

    def popularity_prior(self, items: pd.DataFrame) -> np.ndarray:
        """popularity_weight * log(1 + ratings of the item in training); 0 for a new item."""
        if not self.popularity_weight or self.spec.item_id not in items:  # no id: only features_only callers
            return np.zeros(len(items))
        counts = canonical_ids(items[self.spec.item_id]).map(self.item_counts).fillna(0).to_numpy(dtype=float)
        return self.popularity_weight * np.log1p(counts)

    def item_embeddings(self, items: pd.DataFrame, features_only: bool = False) -> np.ndarray:
        """(n, dim) float32: [tower, 1, bias + popularity prior] per item row.

        The inner product with a user vector is the ranking score: the predicted rating minus
        the global mean, plus the item's popularity prior (0 unless `popularity_weight` is set).
        """
        tower, bias, factors = self._item_parts(items, features_only)
        bias = bias + self.popularity_prior(items)
        return np.hstack([tower, np.ones((len(items), 1)), bias[:, None], factors]).astype(np.float32)

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        """Predicted ratings (without the popularity prior and the collaborative part, which
        only serve ranking)."""
        self._check_fitted()
        s = self.spec
        return self.predict_encoded(self.user_encoder.transform(self._with_id(frame, s.user_id, False)),
                                    self.item_encoder.transform(self._with_id(frame, s.item_id, False)))

    def predict_encoded(self, xu: sp.csr_matrix, xi: sp.csr_matrix) -> np.ndarray:
        """`predict` for rows already encoded by this model's `user_encoder` and `item_encoder`
        (`choose_l2` encodes its validation rows once for every L2 it tries). The user's tower
        and bias are rounded to float32 as `user_embeddings` publishes them."""
        self._check_fitted()
        k = self.k
        u = (xu @ self.user_weights[:, : k + 1]).astype(np.float32).astype(np.float64)
        e = xi @ self.item_weights[:, : k + 1]
        return self.global_mean + np.einsum("nk,nk->n", u[:, :k], e[:, :k]) + u[:, k] + e[:, k]

    def score(self, users: pd.DataFrame, items: pd.DataFrame) -> np.ndarray:
        """(users, items) ranking scores: exactly the inner products of the published vectors."""
        return self.user_embeddings(users).astype(np.float64) @ self.item_embeddings(items).astype(np.float64).T

    def config(self) -> dict:
        return {"dim": self.dim, "hybrid": self.hybrid, "l2": self.l2, "max_iter": self.max_iter, "ftol": self.ftol,
                "solver": self.solver,
                "converged": self.converged, "iterations": self.iterations,
                "seed": self.seed, "global_mean": self.global_mean, "metric": "inner_product",
                "popularity_weight": self.popularity_weight, "spec": asdict(self.spec),
                "als_factors": self.als_factors, "als_weight": self.als_weight, "als_norm_power": self.als_norm_power,
                "als_regularization": self.als_regularization, "als_alpha": self.als_alpha,
                "als_iterations": self.als_iterations, "feature_ridge": self.feature_ridge, "bias_l2": self.bias_l2}
