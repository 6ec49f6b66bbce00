"""Fitting the towers: the same objective by two solvers, with the other parts of the model fixed.

The objective is the squared error of every rating with L2 on the towers (the bias columns with
their own L2). `alternate` (the default) solves one tower exactly while the other is fixed, in
closed form per side (`TowerSide` holds the algebra), until a sweep lowers the loss by less than
`ftol`; `lbfgs` moves both towers at once with scipy's L-BFGS. On large tables `TowerSide`'s
per-row systems run in compiled kernels (`kernels`, numba); small ones stay on numpy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.optimize
import scipy.sparse as sp

from recsys_platform.ml.encoding import TowerEncoder, TrainingEncoding


@dataclass(frozen=True)
class TowerSettings:
    """What the solvers read of a model's settings."""

    width: int        # the tower's own dimensions; its weights have one more column, the bias
    l2: float
    bias_l2: float
    max_iter: int     # sweeps or iterations, a safety net: training stops on its tolerance first
    ftol: float       # relative loss decrease per sweep or iteration below which training stops
    seed: int

    @property
    def regularisation(self) -> np.ndarray:
        """Per weight column: the tower's L2, then the bias's."""
        return np.r_[np.full(self.width, self.l2), self.bias_l2]


@dataclass(frozen=True)
class TowerFit:
    """Both towers' weights ((encoded columns) x (width + 1): tower, then bias) and how training went."""

    user_weights: np.ndarray
    item_weights: np.ndarray
    training_log: list[float]  # the loss per sweep or evaluation
    converged: bool            # stopped on its tolerance, not on max_iter
    iterations: int


SOLVERS = {"alternating": 1e-3, "lbfgs": 1e-7}  # each solver's default relative tolerance (`ftol`)
# From this many ratings, `TowerSide` solves with the compiled kernels (`kernels`, numba): they
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


class TowerSide:
    """One tower's rows (users or items) as `alternate` solves them.

    Row r's embedding is e_r = x_r W = c_r + z_r: c_r from its feature columns (weights F, shared)
    and z_r from its own id column (hybrid mode). With the other tower fixed, each rating n of row
    r is a linear function a_n . e_r of it (a_n: the other side's tower, then 1 for this side's
    bias), to fit to t_n (the target minus the other side's bias). Per row, A_r = sum a_n a_n^T
    and b_r = sum a_n t_n. With L = diag(l2 per column), minimising over z_r gives
    z_r = P_r (b_r - A_r c_r), P_r = (A_r + L)^-1; put back, the loss in F alone is quadratic with
    Hessian sum_r x_r x_r^T (kron) (L - L P_r L) + L and gradient term sum_r x_r (kron) L P_r b_r,
    so F is one small dense solve (features x dims), then every z_r a batched one. Without id
    columns the per-row terms are A_r and b_r themselves. The per-row work runs
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
        self.with_ids = ids is not None
        if self.with_ids:
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
        if not self.with_ids:
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
        own = np.einsum("rij,rj->ri", p, b - np.einsum("rij,rj->ri", big_a, embeddings)) if self.with_ids else None
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
                np.asarray(reg, dtype=np.float64), self.with_ids, x.indptr, x.indices, x.data, d, self.bounds)
            hessian = hessian.reshape(d * dims, d * dims)
        else:
            big_a, b, p, per_row, rhs_row, squares = self._row_terms(other, reg)
            hessian, gradient = self._hessian(per_row), x.T @ rhs_row
        hessian += np.diag(np.tile(reg, d))
        features = np.linalg.solve(hessian, gradient.ravel()).reshape(d, dims)
        embeddings = x @ features
        if self.compiled:
            own, error = kernels.own_and_error(p, big_a, b, embeddings, self.with_ids)
        else:
            own, error = self._own_and_error(p, big_a, b, embeddings)
        weights = np.zeros((self.width, dims))
        weights[self.feature_columns] = features
        if self.with_ids:
            weights[self.id_of_row] = own
            embeddings += own
        return weights, embeddings, float(error + squares)


def tower_sides(encoded: TrainingEncoding) -> tuple[TowerSide, TowerSide]:
    """The alternating solver's user and item sides of an encoding, built once and kept on it
    (they do not depend on L2: `tuning.choose_l2` fits every L2 on the same sides)."""
    if encoded.sides is None:
        target = encoded.target
        encoded.sides = (TowerSide(encoded.xu, encoded.u_index, encoded.user_encoder, encoded.i_index, target),
                         TowerSide(encoded.xi, encoded.i_index, encoded.item_encoder, encoded.u_index, target))
    return encoded.sides


def alternate(encoded: TrainingEncoding, s: TowerSettings, start: np.ndarray | None = None,
              start_embeddings: np.ndarray | None = None) -> TowerFit:
    """Alternating exact minimisation of the training objective: with one tower fixed, the other's
    weights solve a linear least-squares problem in closed form, so each sweep (user tower,
    then item tower) lowers the loss and needs no step size. `TowerSide` has the algebra.
    `start`: an item tower to start from (a previous fit on the same encoding, as scikit-learn's
    warm_start) instead of random weights; `start_embeddings`: each item row's tower and bias to
    start from instead (another model's, e.g. fitted on part of the same ratings)."""
    user_side, item_side = tower_sides(encoded)
    xi = encoded.xi
    rng = np.random.default_rng(s.seed)
    n, reg = len(user_side.target), s.regularisation
    wi = rng.normal(0, 0.1, (xi.shape[1], s.width + 1))
    if start is not None and start.shape[0] == xi.shape[1]:
        wi = start[:, : s.width + 1]
    ei = xi @ wi if start_embeddings is None else np.asarray(start_embeddings, dtype=np.float64)[:, : s.width + 1]
    log: list[float] = []
    previous = np.inf
    for sweep in range(1, s.max_iter + 1):
        wu, eu, _ = user_side.solve(ei, reg)
        wi, ei, squared_error = item_side.solve(eu, reg)  # the error at this sweep's end
        loss = 0.5 * squared_error / n + 0.5 / n * float((reg * wu * wu).sum() + (reg * wi * wi).sum())
        log.append(loss)
        if sweep > 1 and previous - loss <= s.ftol * abs(previous):
            return TowerFit(wu, wi, log, converged=True, iterations=sweep)
        previous = loss
    return TowerFit(wu, wi, log, converged=False, iterations=s.max_iter)


def lbfgs(encoded: TrainingEncoding, s: TowerSettings) -> TowerFit:
    """The same objective by scipy's L-BFGS over both towers at once (the solver before `alternate`)."""
    xu, xi, u_index, i_index, target = encoded.xu, encoded.xi, encoded.u_index, encoded.i_index, encoded.target
    rng = np.random.default_rng(s.seed)
    du, di, k = xu.shape[1], xi.shape[1], s.width
    n = len(target)
    # Gather matrices turn per-user gradients into per-rating ones (and back) in one product.
    gu = sp.csr_matrix((np.ones(n), (np.arange(n), u_index)), shape=(n, xu.shape[0]))
    gi = sp.csr_matrix((np.ones(n), (np.arange(n), i_index)), shape=(n, xi.shape[0]))
    ru, ri = (gu @ xu).tocsr(), (gi @ xi).tocsr()  # features of each rating's user and item
    sizes = (du * (k + 1), di * (k + 1))
    log: list[float] = []
    # Per-parameter L2: the bias column of each tower may be regularised apart from the tower.
    reg = np.concatenate([np.tile(s.regularisation, du), np.tile(s.regularisation, di)])

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
        log.append(loss)
        return loss, grad

    theta0 = rng.normal(0, 0.1, sizes[0] + sizes[1])
    # Stops when an iteration lowers the loss by less than `ftol` (relative) or the gradient
    # vanishes; `max_iter` is a safety net, and `converged` says which ended the training.
    # ftol 1e-7 at scale 10: 786 iterations, the last 30 lower the loss by 0.003% (a fixed
    # 300 stopped while it still fell 1.5-4.9%); 1e-6 stops at 530 with RMSE 0.0004 worse.
    result = scipy.optimize.minimize(loss_and_grad, theta0, jac=True, method="L-BFGS-B",
                                     options={"maxiter": s.max_iter, "maxfun": 2 * s.max_iter, "ftol": s.ftol})
    return TowerFit(*unpack(result.x), log, converged=bool(result.success), iterations=int(result.nit))
