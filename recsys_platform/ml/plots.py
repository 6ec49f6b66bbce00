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


def ranking_comparison(metrics: dict) -> str:
    """NDCG@10 and top-10 catalog coverage of the model beside popularity and implicit ALS."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["this model", "popularity", "implicit ALS"]
    suffixes = ["", "_popularity", "_als"]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.0), layout="constrained")
    for ax, (key, title) in zip(axes, (("ndcg@10", "NDCG@10 (held out)"), ("coverage", "top-10 catalog coverage"))):
        values = [float(metrics.get(f"{key}{s}", np.nan)) for s in suffixes]
        bars = ax.bar(names, values, color=["#4c72b0", "#999999", "#dd8452"])
        ax.bar_label(bars, fmt="%.3f")
        ax.set(title=title, ylim=(0, max(np.nanmax(values) * 1.25, 0.01)))
    return _markdown(fig)
