"""Small PNG plots for asset metadata (matplotlib, headless), returned as markdown images."""

from __future__ import annotations

import base64
import io

import numpy as np


def _markdown(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    # The figure lays itself out (constrained layout) in the one draw that `savefig` makes;
    # bbox_inches="tight" would draw it twice.
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return f"![plot](data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()})"


def model_report(actual: np.ndarray, predicted: np.ndarray, training_loss: list[float], step: str = "sweep") -> str:
    """Predicted rating per actual rating (box plot) and the training loss curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2), layout="constrained")
    levels = sorted(set(int(a) for a in actual))
    left.boxplot([predicted[actual == lv] for lv in levels], positions=levels, widths=0.5)
    left.plot([1, 5], [1, 5], "--", color="grey", linewidth=1)
    left.set(xlabel="actual rating (held out)", ylabel="predicted", title="predicted vs actual")
    right.plot(np.arange(1, len(training_loss) + 1), training_loss, marker="o", markersize=3)
    right.set(xlabel=step, ylabel="loss", yscale="log", title="training loss")
    return _markdown(fig)


def ranking_comparison(metrics: dict, tried: dict[str, dict] | None = None, min_coverage: float = 0.2) -> str:
    """NDCG@10 and top-10 catalog coverage of the model beside popularity, implicit ALS and EASE, and
    with `tried` (`tuning.choose_blend`'s grid) a third panel: validation NDCG@10 against
    coverage for every ranking setting tried (a colour per `"norm_power"`), the coverage floor
    and the setting chosen (marked `"chosen"`). One figure: each one costs a draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["this model", "popularity", "implicit ALS", "EASE"]
    suffixes = ["", "_popularity", "_als", "_ease"]
    if "ndcg@10_ease" not in metrics:  # EASE is left out past train_recommender's ease_max_items
        names, suffixes = names[:3], suffixes[:3]
    fig, axes = plt.subplots(1, 3 if tried else 2, figsize=(14 if tried else 9, 3.2), layout="constrained",
                             width_ratios=[1, 1, 1.4] if tried else None)
    for ax, (key, title) in zip(axes, (("ndcg@10", "NDCG@10 (held out)"), ("coverage", "top-10 catalog coverage"))):
        values = [float(metrics.get(f"{key}{s}", np.nan)) for s in suffixes]
        bars = ax.bar(names, values, color=["#4c72b0", "#999999", "#dd8452", "#55a868"][:len(names)])
        ax.bar_label(bars, fmt="%.3f")
        ax.set(title=title, ylim=(0, max(np.nanmax(values) * 1.25, 0.01)))
    if tried:
        _tradeoff(axes[2], tried, min_coverage)
    return _markdown(fig)


def _tradeoff(ax, tried: dict[str, dict], min_coverage: float) -> None:
    by_power: dict[float, list[tuple[float, float]]] = {}
    for v in tried.values():
        by_power.setdefault(v["norm_power"], []).append((v["coverage"], v["ndcg"]))
    for power, points in sorted(by_power.items()):
        ax.scatter(*zip(*points), s=8, alpha=0.6, label=f"factor norm power {power}")
    for v in tried.values():
        if v.get("chosen"):
            ax.scatter([v["coverage"]], [v["ndcg"]], s=90, marker="*", color="black", label="chosen")
    ax.axvline(min_coverage, linestyle="--", color="grey", linewidth=1, label=f"coverage floor {min_coverage:.0%}")
    ax.set(xscale="log", xlabel="top-10 catalog coverage", ylabel="NDCG@10", title="settings tried (validation)")
    ax.legend(fontsize=7, loc="lower left")


def hit_rate_by_hour(rows: list[dict]) -> str:
    """Online hit rate per hour (`hour`: a datetime), one line per model version (`model_version`,
    `hit_rate`; hours without judged answers left out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.2), layout="constrained")
    for version in sorted({r["model_version"] for r in rows}):
        points = sorted((r["hour"], r["hit_rate"]) for r in rows
                        if r["model_version"] == version and r["hit_rate"] is not None)
        if points:
            ax.plot(*zip(*points), marker="o", markersize=4, label=version)
    ax.set(xlabel="hour (UTC)", ylabel="hit rate at k", title="online hit rate by model version", ylim=(0, None))
    ax.legend(fontsize=7, loc="lower left")
    fig.autofmt_xdate()
    return _markdown(fig)
