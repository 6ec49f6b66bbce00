"""Experiment (issue 11, not yet the product): blending the two-tower score with implicit ALS.

Per user, both score vectors over the catalog are standardised and added, ALS weighted by a
lambda chosen on the validation split; NDCG@10 and coverage on the held-out split. Measured on
2026-11-29 at scale 10: features mode 0.182 / 12.0% (ALS 0.139, two-tower 0.162), collaborative
mode 0.313 / 10.5% (ALS 0.267, two-tower 0.242): better than both in both modes, coverage still
low. Within a user, ranking by z(tt) + lambda * z(als) equals ranking by tt/sd_tt + lambda * als/sd_als,
an inner product of [u_tt/sd_tt, lambda*u_als/sd_als] and [v_tt, v_als]: publishable as one vector
pair (e.g. 16 two-tower + 16 ALS dimensions), cold users' ALS part mapped from features.

    python benchmarks/blend_experiment.py --scale 10
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_results  # noqa: E402
from recsys_platform.batch.seed import training_table  # noqa: E402
from recsys_platform.batch.seed.synthetic import MODES  # noqa: E402
from recsys_platform.ml.evaluation import (  # noqa: E402
    _model_rows,
    _ranking,
    _ranking_inputs,
    choose_popularity_weight,
    ranking_metrics,
    split,
    tune_als,
)
from recsys_platform.ml.model import TwoTowerRecommender, TwoTowerSpec  # noqa: E402

LAMBDAS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0)


def _z(m):
    return (m - m.mean(axis=1, keepdims=True)) / (m.std(axis=1, keepdims=True) + 1e-9)


def blend(als, tower, lam: float):
    """`score_rows_for(users, items)` of z(two-tower) + lam * z(ALS), per user."""
    def rows_for(who, what):
        a, b = als.score_rows(who, what), _model_rows(tower, who, what)
        return lambda lo, hi: _z(b(lo, hi)) + lam * _z(a(lo, hi))
    return rows_for


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=10)
    args = parser.parse_args()
    s = TwoTowerSpec()
    out = []
    for mode in MODES:
        frame = training_table(args.scale, mode=mode)
        rest, test = split(frame, 0.2, 0)
        train, valid = split(rest, 0.125, 1)
        als, _ = tune_als(s, train, valid)
        tower = TwoTowerRecommender().fit(train)
        choose_popularity_weight(tower, train, valid)

        users, items, seen, relevant = _ranking_inputs(s, train, valid)
        tried = {lam: _ranking(blend(als, tower, lam)(users, items), len(users), seen, relevant).ndcg for lam in LAMBDAS}
        lam = max(tried, key=tried.get)
        row = {"mode": mode, "scale": args.scale, "lambda": lam, "validation_ndcg_by_lambda": tried,
               "blend": ranking_metrics(s, blend(als, tower, lam), train, test, valid),
               "two_tower": ranking_metrics(s, blend(als, tower, 0.0), train, test, valid),
               "als": ranking_metrics(s, als.score_rows, train, test, valid)}
        out.append(row)
        print(f"{mode} scale {args.scale:g}: blend (lambda {lam}) NDCG@10 {row['blend']['ndcg@10']:.3f} / coverage "
              f"{row['blend']['coverage']:.1%}; two-tower {row['two_tower']['ndcg@10']:.3f}; ALS {row['als']['ndcg@10']:.3f}",
              flush=True)
    print(f"results: {write_results('blend_experiment', {'runs': out})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
