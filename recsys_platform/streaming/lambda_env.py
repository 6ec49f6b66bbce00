"""The Lambdas' configuration: build the handlers from a deployed function's environment.

Environment (set by infra/):
- RECSYS_ARTIFACTS_URL: the ML artifacts bucket (default: `file://$RECSYS_HOME/ml-artifacts`).
- The vector database as RECSYS_VECTOR_DSN, or RECSYS_VECTOR_SECRET_ARN + RECSYS_VECTOR_HOST +
  RECSYS_VECTOR_DB (the RDS-managed secret, read at cold start: the deployed form), or neither
  (the embedded server under RECSYS_HOME, for a local run).
- AWS_ENDPOINT_URL (optional, an S3/Lambda-compatible endpoint), RECSYS_TOP_K (default 5).
- MODEL_INFERENCE_FUNCTION: the stream transformation calls this function by `lambda:Invoke`;
  empty, it builds the inference handler in-process from the same environment.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping

from recsys_platform.streaming.handlers import LambdaInvoker, ModelInference, StreamTransformation
from recsys_platform.streaming.inference import InferenceService, build_inference_service


def vector_dsn(env: Mapping[str, str]) -> str:
    """The vector database DSN from the environment (see the module docstring)."""
    if env.get("RECSYS_VECTOR_DSN"):
        return env["RECSYS_VECTOR_DSN"]
    secret_arn = env.get("RECSYS_VECTOR_SECRET_ARN", "")
    if secret_arn:
        import boto3
        from psycopg.conninfo import make_conninfo

        client = boto3.client("secretsmanager", endpoint_url=env.get("AWS_ENDPOINT_URL") or None)
        secret = json.loads(client.get_secret_value(SecretId=secret_arn)["SecretString"])
        host, _, port = env["RECSYS_VECTOR_HOST"].partition(":")
        return make_conninfo(host=host, port=port or "5432", dbname=env.get("RECSYS_VECTOR_DB", "recsys"),
                             user=secret["username"], password=secret["password"], sslmode="require")
    from recsys_platform.vectors.embedded import embedded_dsn

    return embedded_dsn(os.path.join(_home(env), "pgdata"))


def _home(env: Mapping[str, str]) -> str:
    return os.path.abspath(env.get("RECSYS_HOME") or "./.recsys")


def top_k(env: Mapping[str, str]) -> int:
    return int(env.get("RECSYS_TOP_K") or "5")


def inference_service(env: Mapping[str, str]) -> InferenceService:
    artifacts_url = env.get("RECSYS_ARTIFACTS_URL") or f"file://{_home(env)}/ml-artifacts"
    return build_inference_service(artifacts_url, vector_dsn(env), env.get("AWS_ENDPOINT_URL", ""), k=top_k(env))


def model_inference(env: Mapping[str, str]) -> ModelInference:
    return ModelInference(inference_service(env))


def stream_transformation(env: Mapping[str, str]) -> StreamTransformation:
    function = env.get("MODEL_INFERENCE_FUNCTION", "")
    infer = LambdaInvoker(function, env.get("AWS_ENDPOINT_URL", "")) if function else model_inference(env)
    return StreamTransformation(infer, k=top_k(env))
