"""Firehose stream transformation Lambda: an adapter over `recsys_platform.streaming.handlers.StreamTransformation`.

Activity events in, recommendation records out, one model inference call per batch: by
`lambda:Invoke` on MODEL_INFERENCE_FUNCTION when it is set (the deployed form), else in-process
from the same environment (`recsys_platform.streaming.lambda_env`).
"""

from __future__ import annotations

import os

from recsys_platform.streaming.handlers import StreamTransformation
from recsys_platform.streaming.lambda_env import stream_transformation

_handler: StreamTransformation | None = None  # built at the first invocation of a container, then reused


def lambda_handler(event: dict, context=None) -> dict:
    global _handler
    if _handler is None:
        _handler = stream_transformation(os.environ)
    return _handler(event, context)
