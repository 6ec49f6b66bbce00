"""Model benchmark: the platform's model (the hybrid: two-tower + 16 implicit-ALS dimensions, the
asset's default) against popularity and implicit ALS (tuned on the same validation split), on
both seed modes, per scale: NDCG@10, top-10 catalog coverage, RMSE, training time, and cold start
(users held out entirely, embedded from their features alone).

    python benchmarks/model.py --scales 10 100                 # 1000 on demand (~4M ratings)
    python benchmarks/model.py --scales 1 --modes collaborative
    python benchmarks/model.py --scales 10 --als-factors 0     # the two-tower alone
    python benchmarks/model.py --scales 1000 --fit-only        # training time alone, both modes

Training time is printed two ways: the asset's training (`choose_l2`: the towers at each L2
from the largest down until validation RMSE rises, then the collaborative part once), and one
fit at `l2=80` beside the same fit by L-BFGS (the solver before; up to `--lbfgs-up-to`, default
scale 10: it took 446 s at scale 100) and one fit of implicit ALS at its tuned setting.

Generated tables are kept under `--cache` (default benchmarks/.cache, git-ignored): the
scale-1000 table takes longer to generate (26 minutes here) than to train on.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_results  # noqa: E402
from recsys_platform.batch.seed import training_table  # noqa: E402
from recsys_platform.batch.seed.synthetic import MODES  # noqa: E402
from recsys_platform.ml.collaborative import CollaborativeSettings  # noqa: E402
from recsys_platform.ml.evaluation import ALSBaseline, model_rows, ranking_metrics, split  # noqa: E402
from recsys_platform.ml.hybrid import HybridRecommender, HybridSettings  # noqa: E402
from recsys_platform.ml.spec import RecommenderSpec  # noqa: E402
from recsys_platform.ml.training import train_and_evaluate  # noqa: E402
from recsys_platform.ml.tuning import L2_GRID, choose_l2, choose_ranking  # noqa: E402

# The collaborative part's settings beside the asset's defaults (`--als-iterations`), for every fit here.
COLLABORATIVE_OPTIONS: dict = {}


def model_with(als_factors: int, **settings) -> HybridRecommender:
    """The asset's model with `als_factors` collaborative factors (0: the towers alone)."""
    collaborative = CollaborativeSettings(factors=als_factors, **COLLABORATIVE_OPTIONS)
    return HybridRecommender(settings=HybridSettings(collaborative=collaborative, **settings))


def cold_start(frame, als_factors: int, seed: int = 0, share: float = 0.2) -> dict:
    """NDCG@10 for users never seen in training (a share of customers held out with all their
    ratings), the model embedding them from features only, against popularity."""
    s = RecommenderSpec()
    customers = frame[s.user_id].unique()
    held = set(np.random.default_rng(seed).choice(customers, int(len(customers) * share), replace=False))
    cold = frame[frame[s.user_id].isin(held)]
    warm = frame[~frame[s.user_id].isin(held)]
    train, valid = split(warm, 0.15, seed + 1)
    model = choose_l2(model_with(als_factors), train, valid).model
    model.ranking = choose_ranking(model, train, valid).weights
    mine = ranking_metrics(s, lambda users, items: model_rows(model, users.assign(**{s.user_id: None}), items),
                           train, cold)
    popularity = train[s.item_id].value_counts()

    def popular(users, items):
        row = popularity.reindex(items[s.item_id]).fillna(0).to_numpy(dtype=float)
        return lambda lo, hi: np.tile(row, (hi - lo, 1))

    pop = ranking_metrics(s, popular, train, cold)
    return {"cold_users": len(held), "ndcg@10": mine["ndcg@10"], "ndcg@10_popularity": pop["ndcg@10"]}


def cached_table(scale: float, mode: str, cache: Path | None):
    """`training_table(scale, mode)`, read from `cache` when the same generator made it before
    (the file name carries a digest of the generator's source, so a changed generator never
    reuses an old table)."""
    import hashlib
    import inspect

    import pandas as pd

    from recsys_platform.batch.seed import synthetic

    digest = hashlib.sha256(inspect.getsource(synthetic).encode()).hexdigest()[:12]
    path = cache / f"{mode}-{scale:g}-{digest}.parquet" if cache else None
    if path and path.exists():
        return pd.read_parquet(path)
    frame = training_table(scale, mode=mode)
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(path)
    return frame


def asset_training_time(train, valid, als_factors: int) -> dict:
    """Seconds the asset spends training: `choose_l2` over L2_GRID (the towers at each L2 it
    tries, the collaborative part once), with the L2 values it tried and the peak memory."""
    start = time.perf_counter()
    choice = choose_l2(model_with(als_factors), train, valid)
    return {"fit_s": time.perf_counter() - start, "l2": choice.l2,
            "l2_tried": {str(k): v for k, v in choice.validation_rmse.items()}, "sweeps": choice.model.iterations,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}


def fit_times(train, als_factors: int, lbfgs: bool, als_setting: dict | None) -> dict:
    """Seconds to fit the model on `train` at `l2=80` with each solver (L-BFGS only if `lbfgs`),
    and one implicit-ALS fit at `als_setting`; with the sweeps or iterations each took."""
    out = {}
    for solver in ("alternating", "lbfgs") if lbfgs else ("alternating",):
        start = time.perf_counter()
        model = model_with(als_factors, solver=solver).fit(train)
        out[solver] = {"fit_s": time.perf_counter() - start, "iterations": model.iterations,
                       "converged": model.converged, "final_loss": model.training_log[-1]}
    if als_setting is not None:
        start = time.perf_counter()
        ALSBaseline(RecommenderSpec(), **als_setting).fit(train)
        out["implicit_als"] = {"fit_s": time.perf_counter() - start}
    return out


def _als_setting(params: str) -> dict:
    """'factors=16 regularization=0.1 alpha=1.0' -> keyword arguments of ALSBaseline."""
    pairs = dict(p.split("=") for p in params.split())
    return {"factors": int(pairs["factors"]), "regularization": float(pairs["regularization"]), "alpha": float(pairs["alpha"])}


def print_fit_times(runs: list[dict]) -> None:
    print(f"\n{'training time':<26}{'asset (L2 choice)':>26}{'one fit, l2=80':>22}{'L-BFGS (before)':>20}"
          f"{'implicit ALS, 1 fit':>22}")
    for r in runs:
        t = r["fit"]
        alt, lbfgs, asset = t["alternating"], t.get("lbfgs"), t.get("asset")
        print(f"{r['mode'] + ' scale ' + format(r['scale'], 'g'):<26}"
              f"{(format(asset['fit_s'], '.1f') + ' s, l2 ' + format(asset['l2'], 'g') + ', ' + str(len(asset['l2_tried'])) + ' tried') if asset else '-':>26}"
              f"{format(alt['fit_s'], '.1f') + ' s / ' + str(alt['iterations']) + ' sweeps':>22}"
              f"{(format(lbfgs['fit_s'], '.1f') + ' s / ' + str(lbfgs['iterations']) + ' it.') if lbfgs else '-':>20}"
              f"{format(t['implicit_als']['fit_s'], '.1f') + ' s' if 'implicit_als' in t else '-':>22}")
    print("(on the training split: 70% of the ratings; same data, same objective for both solvers; the asset's "
          "training is the goal's figure)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", type=float, nargs="+", default=[10, 100])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--als-factors", type=int, default=16,
                        help="collaborative dimensions of the 32 (default 16, the asset's; 0: the two-tower alone)")
    parser.add_argument("--lbfgs-up-to", type=float, default=10, help="time the L-BFGS fit up to this scale")
    parser.add_argument("--fit-only", action="store_true", help="only the training times (for scale 1000)")
    parser.add_argument("--als-iterations", type=int, help="implicit-ALS iterations of the collaborative part "
                        "(default: the model's)")
    parser.add_argument("--cache", type=Path, default=Path(__file__).parent / ".cache",
                        help="generated tables are kept here (default benchmarks/.cache)")
    args = parser.parse_args()
    if args.als_iterations:
        COLLABORATIVE_OPTIONS["iterations"] = args.als_iterations
    runs = []
    for mode in args.modes:
        for scale in args.scales:
            frame = cached_table(scale, mode, args.cache)
            if args.fit_only:
                rest, _ = split(frame, 0.2, 0)
                train, valid = split(rest, 0.1 / 0.8, 1)  # the splits train_and_evaluate uses
                asset = asset_training_time(train, valid, args.als_factors)
                fit = fit_times(train, args.als_factors, scale <= args.lbfgs_up_to,
                                {"factors": 16, "regularization": 0.1, "alpha": 10.0})
                fit["asset"] = asset
                runs.append({"mode": mode, "scale": scale, "ratings": len(frame), "train_ratings": len(train), "fit": fit})
                print(f"{mode} scale {scale:g}: {len(frame):,} ratings, the asset's training {asset['fit_s']:.1f} s "
                      f"(l2 {asset['l2']:g}, peak {asset['peak_rss_gb']:.1f} GB), one fit at l2=80 "
                      f"{fit['alternating']['fit_s']:.1f} s", flush=True)
                continue
            start = time.perf_counter()
            result = train_and_evaluate(frame, model_with(args.als_factors), l2_grid=L2_GRID)
            total_s = time.perf_counter() - start
            model, m = result.model, result.metrics
            run = {"mode": mode, "scale": scale, "ratings": len(frame), "train_and_evaluate_s": total_s,
                   "training_iterations": model.iterations, "training_converged": model.converged,
                   "popularity_ndcg_by_weight": result.popularity_ndcg_by_weight,
                   "als_ndcg_by_setting": result.als_ndcg_by_setting, "als_factors": args.als_factors,
                   "blend_ndcg_by_weight": result.blend_ndcg_by_weight, "metrics": m,
                   "cold_start": cold_start(frame, args.als_factors),
                   "fit": {**fit_times(result.train, args.als_factors, scale <= args.lbfgs_up_to, _als_setting(m["als_params"])),
                           "asset": asset_training_time(result.train, result.valid, args.als_factors)}}
            runs.append(run)
            print(f"{mode} scale {scale:g}: {len(frame):,} ratings, {total_s:.1f}s (incl. the ALS grid), "
                  f"{model.iterations} {model.settings.solver} sweeps/iterations, converged {model.converged}, "
                  f"l2 {model.settings.l2:g} "
                  f"(validation RMSE by l2: {m.get('validation_rmse_by_l2')})", flush=True)
    if args.fit_only:
        print_fit_times(runs)
        print(f"results: {write_results('model_fit', {'runs': runs})}")
        return 0
    mine = "hybrid" if args.als_factors else "two-tower"
    print(f"\n{'data':<26}{mine:>20}{'popularity':>20}{'implicit ALS':>20}{mine + ' cold':>16}{'pop. cold':>11}"
          f"{'RMSE / bias':>16}")
    for r in runs:
        m, c = r["metrics"], r["cold_start"]

        def cell(ndcg, coverage):
            return f"{ndcg:.3f} / {coverage:.1%}"

        print(f"{r['mode'] + ' scale ' + format(r['scale'], 'g'):<26}{cell(m['ndcg@10'], m['coverage']):>20}"
              f"{cell(m['ndcg@10_popularity'], m['coverage_popularity']):>20}{cell(m['ndcg@10_als'], m['coverage_als']):>20}"
              f"{c['ndcg@10']:>16.3f}{c['ndcg@10_popularity']:>11.3f}"
              f"{m['rmse']:>9.3f} / {m['rmse_bias']:.3f}")
    print("(NDCG@10 / top-10 catalog coverage on the held-out split; cold: NDCG@10 for customers never seen in training)")
    print_fit_times(runs)
    print(f"results: {write_results('model', {'runs': runs})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
