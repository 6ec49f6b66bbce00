"""Model benchmark: training time and held-out metrics against the baselines, per scale.

    python benchmarks/model.py --scales 1 100          # 1000 on demand (~4M ratings)
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_results  # noqa: E402
from recsys_platform.batch.seed import training_table  # noqa: E402
from recsys_platform.ml.evaluation import train_and_evaluate  # noqa: E402
from recsys_platform.ml.model import TwoTowerRecommender  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", type=float, nargs="+", default=[1, 100])
    args = parser.parse_args()
    runs = []
    for scale in args.scales:
        frame = training_table(scale)
        start = time.perf_counter()
        result = train_and_evaluate(frame, TwoTowerRecommender())
        total_s = time.perf_counter() - start
        model, metrics = result.model, result.metrics
        run = {"scale": scale, "ratings": len(frame), "train_and_evaluate_s": total_s,
               "popularity_ndcg_by_weight": result.popularity_ndcg_by_weight,
               "evaluations": len(model.training_log), "metrics": metrics,
               "beats_bias_rmse": metrics["rmse"] < metrics["rmse_bias"],
               "beats_popularity_ndcg": metrics["ndcg@10"] > metrics["ndcg@10_popularity"]}
        runs.append(run)
        print(f"scale {scale:g}: {len(frame):,} ratings, train+evaluate {total_s:.1f}s, popularity weight {model.popularity_weight}; RMSE {metrics['rmse']:.3f} "
              f"(bias {metrics['rmse_bias']:.3f}, mean {metrics['rmse_global_mean']:.3f}); NDCG@10 "
              f"{metrics['ndcg@10']:.3f} (popularity {metrics['ndcg@10_popularity']:.3f}); coverage {metrics['coverage']:.2f}",
              flush=True)
    print(f"results: {write_results('model', {'runs': runs})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
