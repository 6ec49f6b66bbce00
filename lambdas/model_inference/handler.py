"""Model inference Lambda: batch recommendations for the stream, and the lab's Function URL routes.

Environment: RECSYS_ARTIFACTS_URL (the ML artifacts bucket); the vector database as either
RECSYS_VECTOR_DSN, or RECSYS_VECTOR_SECRET_ARN + RECSYS_VECTOR_HOST + RECSYS_VECTOR_DB (the
RDS-managed secret, read at cold start; the deployed form), or neither (the embedded server
under RECSYS_HOME); AWS_ENDPOINT_URL (optional); RECSYS_TOP_K (default 5). The model is cached across invocations and reloaded when CURRENT
changes.

Events:
  {"action": "recommend", "requests": [...], "k": 5}   from the stream transformation Lambda
  a Function URL request (payload format 2.0):
    POST /user_embeddings          body [{"city","country","creditlimit"}]  -> [[...], ...]
    POST /items_from_user?limit=N  body [..embedding..]                     -> [{"id","score"}]
    GET  /items_from_item?item_id=S10_1678&limit=N                          -> [{"id","score"}]
"""

from __future__ import annotations

import json
import os

from recsys_platform.core.errors import RecsysError
from recsys_platform.core.inference import InferenceService, ModelCache
from recsys_platform.core.object_store import ObjectStore
from recsys_platform.core.vector_store import VectorStore, embedded_dsn

_SERVICE: InferenceService | None = None
MAX_LIMIT = 100


def vector_dsn() -> str:
    """The vector database DSN from the environment (see the module docstring)."""
    if os.environ.get("RECSYS_VECTOR_DSN"):
        return os.environ["RECSYS_VECTOR_DSN"]
    secret_arn = os.environ.get("RECSYS_VECTOR_SECRET_ARN", "")
    if secret_arn:
        import boto3
        from psycopg.conninfo import make_conninfo

        secret = json.loads(boto3.client("secretsmanager", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)
                            .get_secret_value(SecretId=secret_arn)["SecretString"])
        host, _, port = os.environ["RECSYS_VECTOR_HOST"].partition(":")
        return make_conninfo(host=host, port=port or "5432", dbname=os.environ.get("RECSYS_VECTOR_DB", "recsys"),
                             user=secret["username"], password=secret["password"], sslmode="require")
    home = os.path.abspath(os.environ.get("RECSYS_HOME", "./.recsys"))
    return embedded_dsn(os.path.join(home, "pgdata"))


def service() -> InferenceService:
    """Built once per Lambda container (or process) from the environment."""
    global _SERVICE
    if _SERVICE is None:
        home = os.environ.get("RECSYS_HOME", "./.recsys")
        artifacts_url = os.environ.get("RECSYS_ARTIFACTS_URL") or f"file://{os.path.abspath(home)}/ml-artifacts"
        dsn = vector_dsn()
        store = ObjectStore.from_url(artifacts_url, endpoint_url=os.environ.get("AWS_ENDPOINT_URL", ""))
        _SERVICE = InferenceService(ModelCache(store), VectorStore(dsn), k=int(os.environ.get("RECSYS_TOP_K", "5")))
    return _SERVICE


def set_service(svc: InferenceService | None) -> None:
    """Use an explicit service (tests, `recsys-platform serve`); None rebuilds from the environment."""
    global _SERVICE
    _SERVICE = svc


def _response(status: int, body) -> dict:
    return {"statusCode": status, "headers": {"content-type": "application/json"}, "body": json.dumps(body)}


class BadRequest(ValueError):
    pass


def _limit(params: dict) -> int:
    try:
        limit = int(params.get("limit", "10"))
    except ValueError:
        raise BadRequest(f"limit must be a whole number, got {params.get('limit')!r}") from None
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequest(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    return limit


def _body(event: dict):
    raw = event.get("body") or ""
    if event.get("isBase64Encoded"):
        import base64

        raw = base64.b64decode(raw).decode()
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise BadRequest(f"body is not valid JSON: {e}") from None


def _http(event: dict) -> dict:
    method = event["requestContext"]["http"]["method"].upper()
    path = event.get("rawPath") or event["requestContext"]["http"].get("path", "")
    params = event.get("queryStringParameters") or {}
    svc = service()
    try:
        if (method, path) == ("POST", "/user_embeddings"):
            users = _body(event)
            if not isinstance(users, list) or not all(isinstance(u, dict) for u in users):
                raise BadRequest("body must be a list of objects with city, country, creditlimit")
            missing = [n for n, u in enumerate(users) for f in ("city", "country", "creditlimit") if f not in u]
            if missing:
                raise BadRequest(f"user {missing[0]} lacks city, country or creditlimit")
            _, vectors = svc.user_vectors([{"customerNumber": None, "city": u["city"], "country": u["country"],
                                            "creditLimit": float(u["creditlimit"])} for u in users])
            return _response(200, [[round(float(x), 6) for x in v] for v in vectors])
        if (method, path) == ("POST", "/items_from_user"):
            import numpy as np

            vector = _body(event)
            _, model = svc.models.get()
            if not isinstance(vector, list) or len(vector) != model.dim:
                raise BadRequest(f"body must be one embedding of {model.dim} numbers")
            found = svc.vectors.items_for_users(np.array([vector], dtype=np.float32), k=_limit(params))[0]
            return _response(200, [{"id": n.id, "score": round(n.score, 6)} for n in found])
        if (method, path) == ("GET", "/items_from_item"):
            item = params.get("item_id")
            if not item:
                raise BadRequest("query parameter item_id is required")
            found = svc.vectors.similar_items([item], k=_limit(params))[0]
            if not found and not svc.vectors.known_items([item]):
                return _response(404, {"error": f"unknown item_id {item!r}"})
            return _response(200, [{"id": n.id, "score": round(n.score, 6)} for n in found])
        return _response(404, {"error": f"no route {method} {path}"})
    except BadRequest as e:
        return _response(400, {"error": str(e)})
    except RecsysError as e:
        return _response(503, {"error": str(e)})


def lambda_handler(event: dict, context=None) -> dict:
    if "requestContext" in event and "http" in event.get("requestContext", {}):
        return _http(event)
    if event.get("action") == "recommend":
        return service().recommend(event["requests"], k=event.get("k"))
    raise ValueError("unrecognised event: expected a Function URL request or {'action': 'recommend'}")
