"""ML domain: `recommender_model`, trained on the training data, evaluated, published."""

from __future__ import annotations

import dagster as dg

from recsys_platform.assets.ml.assets import MODEL_KEY, build_model_asset
from recsys_platform.batch.contract import Layout

__all__ = ["MODEL_KEY", "build_ml_defs"]


def build_ml_defs(layout: Layout) -> dg.Definitions:
    return dg.Definitions(assets=[build_model_asset(layout)])
