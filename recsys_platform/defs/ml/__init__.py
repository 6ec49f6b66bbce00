"""ML domain: `recommender_model`, trained on the training data, evaluated, published."""

from recsys_platform.defs.ml.assets import MODEL_KEY, build_ml_defs

__all__ = ["MODEL_KEY", "build_ml_defs"]
