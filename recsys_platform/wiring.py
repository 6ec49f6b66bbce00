"""Builds the platform's long-lived services from `Settings`, once, for whoever needs them.

The CLI (`serve`, `deliver`, `produce-events`, `demo`), the benchmarks and the tests compose the
streaming edge here by explicit calls: the inference service, the stream transformation that
calls it in-process, and the delivery runtime that calls the transformation. The Dagster side
gets its objects through `resources/`; the Lambdas build theirs from their environment
(`streaming.lambda_env`).
"""

from __future__ import annotations

from collections.abc import Callable

from recsys_platform.settings import Settings
from recsys_platform.storage.object_store import ObjectStore
from recsys_platform.streaming.delivery import BufferHints, DeliveryRuntime
from recsys_platform.streaming.handlers import ModelInference, StreamTransformation
from recsys_platform.streaming.inference import InferenceService, build_inference_service
from recsys_platform.streaming.stream import Stream


def vector_dsn(settings: Settings) -> str:
    """RECSYS_VECTOR_DSN, or the embedded server under RECSYS_HOME (started or reused)."""
    if settings.vector_dsn:
        return settings.vector_dsn
    from recsys_platform.vectors.embedded import embedded_dsn

    return embedded_dsn(settings.pgdata)


def store(settings: Settings, url: str) -> ObjectStore:
    return ObjectStore.from_url(url, endpoint_url=settings.aws_endpoint_url)


def stream(settings: Settings) -> Stream:
    return Stream.from_setting(settings.stream, settings.home, settings.aws_endpoint_url)


def inference_service(settings: Settings, k: int = 5) -> InferenceService:
    """The one inference service of a process: the active vectors and their model version."""
    return build_inference_service(settings.artifacts_url, vector_dsn(settings), settings.aws_endpoint_url, k=k)


def stream_transformation(service: InferenceService) -> StreamTransformation:
    """The transformation handler calling model inference in-process (one call per batch)."""
    return StreamTransformation(ModelInference(service), k=service.k)


def delivery_runtime(settings: Settings, service: InferenceService, log: Callable[..., None] = print,
                     hints: BufferHints | None = None, retry_duration_s: float = 60.0) -> DeliveryRuntime:
    """The local Firehose: the configured stream, through the transformation, into the bucket."""
    return DeliveryRuntime(stream(settings), stream_transformation(service),
                           store(settings, settings.recommendations_url), f"{settings.home}/delivery",
                           hints=hints, log=log, retry_duration_s=retry_duration_s)
