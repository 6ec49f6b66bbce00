"""The hybrid's collaborative part: implicit-ALS factors of the ratings, carried by the towers.

The ratings as feedback (confidence 1 + alpha * rating; optionally low ones as dislikes) give
each training user and item ALS factors. They are appended to the towers' weights so that a
known row's tower returns its factors exactly and an unknown row's tower returns what its
features predict (a ridge regression from the features to the factors): a customer or product
never seen in training still gets a collaborative part. The factors do not depend on the
towers, nor on their L2.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from recsys_platform.ml.encoding import TowerEncoder


@dataclass(frozen=True)
class CollaborativeSettings:
    """The collaborative part of the vectors: `factors` of their dimensions (0: none)."""

    factors: int = 0
    regularization: float = 0.1
    alpha: float = 10.0        # confidence 1 + alpha * rating: 10 ranked better than 1 and 40 in both seed modes
    iterations: int = 30       # 30 reached the coverage floor's best NDCG where 15 did not (docs/ml.md)
    feature_ridge: float = 1.0  # the ridge from features to factors, for rows never seen in training
    # Ratings at or below this are dislikes (0: none): the user rated the item and did not like
    # it, which implicit reads from a negative confidence as preference 0 at that confidence. Not
    # searched by default: searched, it made ALS alone rank better on all five data sets measured
    # and the hybrid worse on MovieLens (docs/ml.md); the benchmark's "ALS + dislikes" searches it.
    dislikes: float = 0.0


# A warm start's share of the setting's iterations. Measured (features 100, 64 factors,
# regularization 300, 30 iterations): ALS fitted on 80% of the training split and run on all of
# it for 10 more iterations ranked the test split as a 30-iteration fit from scratch did
# (NDCG@10 0.0906 and 0.0904; 10 from scratch: 0.0931 with narrower lists, 1.4% coverage against 1.7%).
WARM_ITERATIONS = 1 / 3
# BLAS runs one thread during a fit on several of implicit's threads from this many factors up
# (`_one_blas_thread`).
ONE_BLAS_THREAD_FROM_FACTORS = 32


def als_factors(u_index: np.ndarray, i_index: np.ndarray, ratings: np.ndarray, n_users: int, n_items: int,
                settings: CollaborativeSettings, seed: int, threads: int = 0,
                start: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Implicit-ALS factors of the ratings (each rating's user and item row), (users, items), on
    `threads` threads (0: every core). On more than one, with ONE_BLAS_THREAD_FROM_FACTORS or
    more, BLAS runs one thread meanwhile (`_one_blas_thread`): the factors then differ from a
    one-thread fit's by BLAS's rounding as the solves carry it, not bit for bit (the scores within
    1e-4 of their largest at regularization 100, tested; more where a solve is ill-conditioned,
    e.g. 64 factors of 110 items at regularization 10). `start`: (users,
    items) factors to start from (a fit on part of these ratings: the refit), for
    WARM_ITERATIONS of the setting's iterations."""
    import warnings

    import implicit

    confidence = 1.0 + settings.alpha * ratings
    if settings.dislikes:
        confidence = np.where(ratings <= settings.dislikes, -confidence, confidence)
    matrix = sp.csr_matrix((confidence, (u_index, i_index)), shape=(n_users, n_items))
    with warnings.catch_warnings():  # implicit warns unless BLAS runs one thread: see _one_blas_thread
        warnings.filterwarnings("ignore", message=".*BLAS is configured to use", category=RuntimeWarning)
        als = implicit.cpu.als.AlternatingLeastSquares(
            factors=settings.factors, regularization=settings.regularization,
            iterations=settings.iterations if start is None else max(1, round(settings.iterations * WARM_ITERATIONS)),
            random_state=seed, calculate_training_loss=False, num_threads=threads)
    if start is not None:
        als.user_factors, als.item_factors = (np.ascontiguousarray(f, dtype=np.float32) for f in start)
    with _one_blas_thread(threads != 1 and settings.factors >= ONE_BLAS_THREAD_FROM_FACTORS):
        als.fit(matrix, show_progress=False)
    return als.user_factors, als.item_factors


def _one_blas_thread(limit: bool):
    """BLAS limited to one thread while implicit's own threads run (`limit`), as implicit advises
    (its warning, silenced above): OpenBLAS's threads busy-wait after each product for cores
    implicit's threads need. Measured here, 30 iterations on all cores, BLAS at its 2 threads ->
    at 1: 128 factors 0.64 -> 0.08 s on 1,300 ratings (the demo), 1.92 -> 0.94 s on 70,000
    (MovieLens' size), 21 s either way on 300,000 (the ALS search's sample at scale 1000); 32
    factors 10.1 -> 8.0 s on 1 M ratings; 64 factors 53 -> 47 s on 2.87 M (scale 1000's training
    split). At 16 factors it saves little on small data and costs on large (2.87 M: 34 -> 40 s),
    hence ONE_BLAS_THREAD_FROM_FACTORS. The limit is process-wide, so a fit on one thread beside
    the towers (`tuning.choose_l2`) keeps BLAS's threads: their batched inverses need them
    (0.74 s -> 1.69 s per call at scale 1000 limited to one)."""
    from contextlib import nullcontext

    from threadpoolctl import threadpool_limits

    return threadpool_limits(1, user_api="blas") if limit else nullcontext()


def factor_weights(encoder: TowerEncoder, rows, x: sp.csr_matrix, factors: np.ndarray, id_column: str,
                   feature_ridge: float) -> np.ndarray:
    """One side's weights for its factors: [ridge coefficients on feature columns; residual
    factors on each id's column], so that x @ weights is each training row's factors exactly, and
    a row without a known id gets what its features predict."""
    cold = encoder.transform(rows.assign(**{id_column: None}))  # features only: id columns zero
    keep = encoder.feature_columns
    features = cold[:, keep]  # the ridge is over feature columns only (an id column is all zero here)
    gram = (features.T @ features).toarray() + feature_ridge * np.eye(len(keep))
    coef = np.zeros((cold.shape[1], factors.shape[1]))
    coef[keep] = np.linalg.solve(gram, features.T @ factors)
    residual = factors - features @ coef[keep]
    return coef + (x - cold).T @ residual  # (x - cold) is each row's id one-hot
