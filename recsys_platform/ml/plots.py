"""Small PNG plots for asset metadata (matplotlib, headless), returned as markdown images."""

from __future__ import annotations

import base64
import io

import numpy as np


def _markdown(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80, bbox_inches="tight")
    plt.close(fig)
    return f"![plot](data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()})"


def model_report(actual: np.ndarray, predicted: np.ndarray, training_loss: list[float]) -> str:
    """Predicted rating per actual rating (box plot) and the training loss curve."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.2))
    levels = sorted(set(int(a) for a in actual))
    left.boxplot([predicted[actual == lv] for lv in levels], positions=levels, widths=0.5)
    left.plot([1, 5], [1, 5], "--", color="grey", linewidth=1)
    left.set(xlabel="actual rating (held out)", ylabel="predicted", title="predicted vs actual")
    right.plot(np.arange(1, len(training_loss) + 1), training_loss)
    right.set(xlabel="L-BFGS evaluation", ylabel="loss", yscale="log", title="training loss")
    return _markdown(fig)
