"""Model inference Lambda: an adapter over `recsys_platform.streaming.handlers.ModelInference`.

Answers the lab's Function URL routes and the stream transformation's batch calls. Its
configuration (artifacts bucket, vector database, top k) is read from the environment once per
container by `recsys_platform.streaming.lambda_env`; the model is cached across invocations and
reloaded when CURRENT changes.
"""

from __future__ import annotations

import os

from recsys_platform.streaming.handlers import ModelInference
from recsys_platform.streaming.lambda_env import model_inference

_handler: ModelInference | None = None  # built at the first invocation of a container, then reused


def lambda_handler(event: dict, context=None) -> dict:
    global _handler
    if _handler is None:
        _handler = model_inference(os.environ)
    return _handler(event, context)
