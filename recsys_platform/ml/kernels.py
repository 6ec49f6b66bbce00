"""Compiled per-row kernels for `solvers.TowerSide` on large tables (numba).

Each solve of the alternating training works on every row's small dense system (15 x 15 with
the default 32-d vectors): accumulate A_r and b_r from the row's ratings, factor A_r + L, and
add (L - L P_r L) to the features' Hessian. numpy can only batch these through gufuncs that
call LAPACK once per 15 x 15 matrix, so at scale 1000 (122,000 users) one solve took 3.6 s,
40% of it in `np.linalg.inv`. Here each row is one loop iteration on both cores, its ratings
gathered in place and its Hessian terms added at once, never stored: about 1.2 s per solve,
the same numbers to ~1e-12 (tests/test_model.py compares both paths).

Compiling takes about 25 s; numba caches the machine code next to this file (or in its user
cache when that is read-only), so a machine pays it once: `scripts/setup.sh` runs
`python -m recsys_platform.ml.kernels` to do it at install time. Loading the cache still costs
about 1 s a process, so small tables keep the numpy path (`solvers.COMPILED_MIN_RATINGS`).
Only training imports this module: the Lambdas never do.
"""

from __future__ import annotations

import numba
import numpy as np


@numba.njit(parallel=True, cache=True)
def row_systems(other, other_index, target, indptr, reg, hybrid, x_indptr, x_indices, x_data, width, bounds):
    """Per row r (its ratings are `indptr[r]:indptr[r + 1]` of `other_index` and `target`):
    A_r = sum a a^T and b_r = sum a t, with a = [the other side's tower, 1] and t = the target
    minus the other side's bias; with `hybrid`, P_r = (A_r + L)^-1 by Cholesky (L = diag(reg)),
    the Hessian term S_r = L - L P_r L and the gradient term g_r = L P_r b_r, else A_r and b_r
    themselves. Summed over rows with the row's features x_r (CSR: `x_indptr`, `x_indices`,
    `x_data`; `width` columns): the features' Hessian sum_r x_r x_r^T (kron) S_r as (width,
    dims, width, dims) and gradient sum_r x_r (kron) g_r, one partial sum per chunk of rows
    (rows `bounds[c]:bounds[c + 1]`, one chunk a thread: `chunk_bounds`). Returns (A, b, P,
    Hessian, gradient, sum of every t^2)."""
    rows, dims, chunks = len(indptr) - 1, len(reg), len(bounds) - 1
    k = dims - 1
    big_a = np.empty((rows, dims, dims))
    b = np.empty((rows, dims))
    p = np.empty((rows if hybrid else 0, dims, dims))
    hessians = np.zeros((chunks, width, dims, width, dims))
    gradients = np.zeros((chunks, width, dims))
    squares = np.zeros(chunks)
    for c in numba.prange(chunks):
        a, a_r, b_r = np.empty(dims), np.empty((dims, dims)), np.empty(dims)
        low, inv_low, p_r = np.empty((dims, dims)), np.empty((dims, dims)), np.empty((dims, dims))
        s_r, g_r = np.empty((dims, dims)), np.empty(dims)
        hessian, gradient = hessians[c], gradients[c]
        square = 0.0
        for r in range(bounds[c], bounds[c + 1]):
            a_r[:], b_r[:] = 0.0, 0.0
            for n in range(indptr[r], indptr[r + 1]):
                j = other_index[n]
                for i in range(k):
                    a[i] = other[j, i]
                a[k] = 1.0
                t = target[n] - other[j, k]
                square += t * t
                for i in range(dims):
                    b_r[i] += a[i] * t
                    for m in range(dims):  # the whole square: it vectorises, a triangle does not
                        a_r[i, m] += a[i] * a[m]
            big_a[r], b[r] = a_r, b_r
            if hybrid:
                for i in range(dims):  # Cholesky factor of A_r + L
                    for m in range(i + 1):
                        v = a_r[i, m] + (reg[i] if i == m else 0.0)
                        for q in range(m):
                            v -= low[i, q] * low[m, q]
                        low[i, m] = np.sqrt(v) if i == m else v / low[m, m]
                for i in range(dims):  # its inverse (lower triangular)
                    inv_low[i, i] = 1.0 / low[i, i]
                    for m in range(i):
                        v = 0.0
                        for q in range(m, i):
                            v -= low[i, q] * inv_low[q, m]
                        inv_low[i, m] = v / low[i, i]
                for i in range(dims):  # P_r = inv_low^T inv_low
                    for m in range(i + 1):
                        v = 0.0
                        for q in range(i, dims):
                            v += inv_low[q, i] * inv_low[q, m]
                        p_r[i, m] = v
                        p_r[m, i] = v
                p[r] = p_r
                for i in range(dims):
                    v = 0.0
                    for m in range(dims):
                        v += p_r[i, m] * b_r[m]
                        s_r[i, m] = -reg[i] * p_r[i, m] * reg[m]
                    s_r[i, i] += reg[i]
                    g_r[i] = reg[i] * v
            else:
                s_r[:], g_r[:] = a_r, b_r
            for first in range(x_indptr[r], x_indptr[r + 1]):
                fa, xa = x_indices[first], x_data[first]
                for i in range(dims):
                    gradient[fa, i] += xa * g_r[i]
                for second in range(first, x_indptr[r + 1]):  # each pair once: mirrored below
                    fb, w = x_indices[second], xa * x_data[second]
                    for i in range(dims):
                        for m in range(dims):
                            hessian[fa, i, fb, m] += w * s_r[i, m]
        squares[c] = square
    total = hessians.sum(axis=0)
    for fa in range(width):  # a pair of distinct columns was added to one of its two blocks
        for fb in range(fa + 1, width):
            for i in range(dims):
                for m in range(dims):
                    v = total[fa, i, fb, m] + total[fb, m, fa, i]
                    total[fa, i, fb, m] = v
                    total[fb, m, fa, i] = v
    return big_a, b, p, total, gradients.sum(axis=0), squares.sum()


def chunk_bounds(indptr: np.ndarray, chunks: int, row_cost: int = 20) -> np.ndarray:
    """Row boundaries of `chunks` runs of rows with about the same work each, a row costing its
    ratings plus `row_cost` (its factorisation and Hessian terms, in ratings' worth). Equal
    numbers of rows would not do: rows come in the order of their first rating, so popular items
    come first, and at scale 1000 the first of two halves held most of the items' ratings."""
    rows = len(indptr) - 1
    cost = indptr + row_cost * np.arange(rows + 1)
    bounds = np.searchsorted(cost, np.linspace(0, cost[-1], chunks + 1)).astype(np.int64)
    bounds[0], bounds[-1] = 0, rows
    return bounds


@numba.njit(parallel=True, cache=True)
def own_and_error(p, big_a, b, c, hybrid):
    """Given every row's feature part c_r: its own part z_r = P_r (b_r - A_r c_r) (zero unless
    `hybrid`) and the sum over rows of e A_r e - 2 e b_r with e = c_r + z_r (the squared error
    of the row's ratings, less their sum of t^2)."""
    rows, dims = c.shape
    own = np.zeros((rows, dims))
    errors = np.empty(rows)
    for r in numba.prange(rows):
        residual, e = np.empty(dims), np.empty(dims)
        for i in range(dims):
            v = b[r, i]
            for m in range(dims):
                v -= big_a[r, i, m] * c[r, m]
            residual[i] = v
        for i in range(dims):
            v = 0.0
            if hybrid:
                for m in range(dims):
                    v += p[r, i, m] * residual[m]
            own[r, i] = v
            e[i] = c[r, i] + v
        error = 0.0
        for i in range(dims):
            v = 0.0
            for m in range(dims):
                v += big_a[r, i, m] * e[m]
            error += e[i] * (v - 2.0 * b[r, i])
        errors[r] = error
    return own, errors.sum()


def warm() -> None:
    """Compile (or load from numba's cache) every kernel for the argument types training uses."""
    dims = 3
    other, reg = np.ones((2, dims)), np.ones(dims)
    index, indptr = np.zeros(2, dtype=np.int64), np.array([0, 2], dtype=np.int64)
    for hybrid in (True, False):
        big_a, b, p, _, _, _ = row_systems(other, index, np.ones(2), indptr, reg, hybrid, np.array([0, 1], dtype=np.int64),
                                           np.zeros(1, dtype=np.int64), np.ones(1), 1, chunk_bounds(indptr, 2))
        own_and_error(p, big_a, b, np.ones((1, dims)), hybrid)


if __name__ == "__main__":
    import time

    start = time.perf_counter()
    warm()
    print(f"training kernels ready ({time.perf_counter() - start:.1f} s; compiled once, then cached)")
