"""Builds the platform's long-lived objects from `Settings`, once, for whoever needs them.

The CLI (`serve`, `deliver`, `produce-events`, `demo`), the two Lambdas, the Glue script, the
benchmarks and the tests compose the streaming edge and the stores here by explicit calls:
the inference service, the stream transformation (calling inference in-process, or the
inference Lambda by `lambda:Invoke` when `RECSYS_INFERENCE_FUNCTION` is set), the delivery
runtime. Secrets named in the settings (an ARN) are read here, when the object is built, never
when settings are parsed or definitions load. The Dagster side gets its objects through
`resources/`.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from recsys_platform.serving.handlers import LambdaInvoker, ModelInference, StreamTransformation
from recsys_platform.serving.service import InferenceService, build_inference_service
from recsys_platform.settings import Settings
from recsys_platform.storage.object_store import ObjectStore
from recsys_platform.streaming.delivery import BufferHints, DeliveryRuntime
from recsys_platform.streaming.stream import Stream
from recsys_platform.vectors.store import VectorStore


def aws_client(settings: Settings, service: str):
    """A boto3 client for `service` at the configured endpoint and region (credentials: boto3's chain)."""
    import boto3

    return boto3.client(service, endpoint_url=settings.aws_endpoint_url or None,
                        region_name=settings.aws_region or None)


def read_secret(arn: str, endpoint_url: str = "", region: str = "") -> dict:
    """A Secrets Manager secret holding JSON (`{"username", "password", ...}`)."""
    import boto3

    client = boto3.client("secretsmanager", endpoint_url=endpoint_url or None, region_name=region or None)
    return json.loads(client.get_secret_value(SecretId=arn)["SecretString"])


def vector_database(dsn: str, secret_arn: str, host: str, database: str, pgdata: str, endpoint_url: str = "",
                    region: str = "") -> str:
    """The vector database's DSN: `dsn`; else the credentials of `secret_arn` at `host[:port]`
    (TLS required: RDS's managed secret, the deployed form); else the embedded server of `pgdata`
    (started, or reused). What `vector_dsn` and the Dagster resource both resolve."""
    if dsn:
        return dsn
    if secret_arn:
        from psycopg.conninfo import make_conninfo

        secret = read_secret(secret_arn, endpoint_url, region)
        name, _, port = host.partition(":")
        return make_conninfo(host=name, port=port or "5432", dbname=database, user=secret["username"],
                             password=secret["password"], sslmode="require")
    from recsys_platform.vectors.embedded import embedded_dsn

    return embedded_dsn(pgdata)


def vector_store(dsn: str, secret_arn: str, host: str, database: str, pgdata: str, endpoint_url: str = "",
                 region: str = "", **options) -> VectorStore:
    """The vector database (`vector_database` says which) as a store. The embedded server's store
    starts it again when a connection finds it down (after a crash); a configured database (RDS)
    restarts itself. `options`: VectorStore's own (timeouts)."""
    revive = None
    if not (dsn or secret_arn):
        from functools import partial

        from recsys_platform.vectors.embedded import embedded_dsn

        revive = partial(embedded_dsn, pgdata)
    return VectorStore(vector_database(dsn, secret_arn, host, database, pgdata, endpoint_url, region),
                       revive=revive, **options)


def vector_dsn(settings: Settings) -> str:
    """RECSYS_VECTOR_DSN; else RECSYS_VECTOR_SECRET_ARN at RECSYS_VECTOR_HOST; else the embedded
    server under RECSYS_HOME."""
    return vector_database(settings.vector_dsn, settings.vector_secret_arn, settings.vector_host, settings.vector_db,
                           settings.pgdata, settings.aws_endpoint_url, settings.aws_region)


def source_url(settings: Settings) -> str:
    """The source's SQLAlchemy URL: RECSYS_SOURCE_URL, or (the Glue job's form) the MySQL
    database of RECSYS_SOURCE_JDBC_URL with the credentials of RECSYS_SOURCE_SECRET_ARN."""
    if not settings.source_secret_arn:
        return settings.source_url
    from sqlalchemy.engine import URL

    secret = read_secret(settings.source_secret_arn, settings.aws_endpoint_url, settings.aws_region)
    hostport, _, database = settings.source_jdbc_url.split("://", 1)[1].partition("/")
    host, _, port = hostport.partition(":")
    return URL.create("mysql+pymysql", username=secret["username"], password=secret["password"], host=host,
                      port=int(port or 3306), database=database.split("?")[0]).render_as_string(hide_password=False)


def store(settings: Settings, url: str) -> ObjectStore:
    return ObjectStore.from_url(url, endpoint_url=settings.aws_endpoint_url, region=settings.aws_region)


def stream(settings: Settings) -> Stream:
    return Stream.from_setting(settings.stream, settings.home, settings.aws_endpoint_url, settings.aws_region)


def inference_service(settings: Settings) -> InferenceService:
    """The one inference service of a process: the active vectors and their model version."""
    vectors = vector_store(settings.vector_dsn, settings.vector_secret_arn, settings.vector_host, settings.vector_db,
                           settings.pgdata, settings.aws_endpoint_url, settings.aws_region)
    return build_inference_service(settings.artifacts_url, vectors, settings.aws_endpoint_url, settings.aws_region,
                                   k=settings.top_k, rules=settings.rules)


def in_process_transformation(service: InferenceService) -> StreamTransformation:
    """The transformation handler calling model inference in-process (one call per batch)."""
    return StreamTransformation(service.recommend, k=service.k, rules=service.rules)


def stream_transformation(settings: Settings) -> StreamTransformation:
    """The stream transformation Lambda: inference by `lambda:Invoke` on RECSYS_INFERENCE_FUNCTION
    (the deployed form), else in-process from the same settings."""
    if settings.inference_function:
        invoker = LambdaInvoker(settings.inference_function, settings.aws_endpoint_url, settings.aws_region)
        return StreamTransformation(invoker, k=settings.top_k, rules=settings.rules)
    return in_process_transformation(inference_service(settings))


def model_inference(settings: Settings) -> ModelInference:
    """The model inference Lambda: its Function URL routes and the stream's batch action."""
    return ModelInference(inference_service(settings))


def delivery_runtime(settings: Settings, service: InferenceService, log: Callable[..., None] = print,
                     hints: BufferHints | None = None, retry_duration_s: float = 60.0) -> DeliveryRuntime:
    """The local Firehose: the configured stream, through the transformation, into the bucket."""
    return DeliveryRuntime(stream(settings), in_process_transformation(service),
                           store(settings, settings.recommendations_url), f"{settings.home}/delivery",
                           hints=hints, log=log, retry_duration_s=retry_duration_s)
