"""Model inference Lambda: an adapter over `recsys_platform.serving.handlers.ModelInference`.

Answers the lab's Function URL routes and the stream transformation's batch calls. Its
configuration (artifacts bucket, vector database, top k) is the platform's one `Settings`, read
from the function's environment once per container; `wiring` builds the handler. The model is
cached across invocations and follows the active vectors' version.
"""

from __future__ import annotations

import os

from recsys_platform import wiring
from recsys_platform.serving.handlers import ModelInference
from recsys_platform.settings import Settings

_handler: ModelInference | None = None  # built at the first invocation of a container, then reused


def lambda_handler(event: dict, context=None) -> dict:
    global _handler
    if _handler is None:
        _handler = wiring.model_inference(Settings.from_env(os.environ))
    return _handler(event, context)
