"""Firehose stream transformation Lambda: an adapter over `recsys_platform.serving.handlers.StreamTransformation`.

Activity events in, recommendation records out, one model inference call per batch: by
`lambda:Invoke` on RECSYS_INFERENCE_FUNCTION when it is set (the deployed form), else in-process
from the same settings. The configuration is the platform's one `Settings`, read from the
function's environment once per container; `wiring` builds the handler.
"""

from __future__ import annotations

import os

from recsys_platform import wiring
from recsys_platform.serving.handlers import StreamTransformation
from recsys_platform.settings import Settings

_handler: StreamTransformation | None = None  # built at the first invocation of a container, then reused


def lambda_handler(event: dict, context=None) -> dict:
    global _handler
    if _handler is None:
        _handler = wiring.stream_transformation(Settings.from_env(os.environ))
    return _handler(event, context)
