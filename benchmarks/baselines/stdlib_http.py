"""BASELINE, not used by the platform: the inference HTTP server as it was before issue 9
(stdlib `http.server`, listen queue 5, hand-written routing), kept so that benchmarks/streaming.py
can measure the FastAPI/uvicorn app against it in the same run. Only the service calls were
adapted to the service's current return values (version, answer).

The model inference HTTP API (the lab's routes), answered by an `InferenceService`.

One route table for both transports: a Lambda Function URL event (payload format 2.0, through
`function_url`) and `recsys-platform serve`'s local HTTP server (`make_server`), which turns each
request into that same event, so the local API and the deployed Function URL run the same code.

    POST /user_embeddings          body [{"city","country","creditlimit"}]  -> [[...], ...]
    POST /items_from_user?limit=N  body [..embedding..]                     -> [{"id","score"}]
    GET  /items_from_item?item_id=S10_1678&limit=N                          -> [{"id","score"}]
"""

from __future__ import annotations

import base64
import binascii
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from recsys_platform.errors import RecsysError
from recsys_platform.serving.messages import CustomerFeatures
from recsys_platform.serving.service import InferenceService

MAX_LIMIT = 100


class BadRequest(ValueError):
    """The request is malformed; the message says how (a 400)."""


def _response(status: int, body) -> dict:
    return {"statusCode": status, "headers": {"content-type": "application/json"}, "body": json.dumps(body)}


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
    try:
        if event.get("isBase64Encoded"):
            raw = base64.b64decode(raw, validate=True).decode()
        return json.loads(raw)
    except (binascii.Error, UnicodeDecodeError):
        raise BadRequest("body is not valid base64-encoded UTF-8") from None
    except json.JSONDecodeError as e:
        raise BadRequest(f"body is not valid JSON: {e}") from None


def _neighbours(found) -> list[dict]:
    return [n.to_json() for n in found]


def _route(service: InferenceService, method: str, path: str, params: dict, event: dict) -> dict:
    if (method, path) == ("POST", "/user_embeddings"):
        users = _body(event)
        if not isinstance(users, list) or not all(isinstance(u, dict) for u in users):
            raise BadRequest("body must be a list of objects with city, country, creditlimit")
        missing = [n for n, u in enumerate(users) for f in ("city", "country", "creditlimit") if f not in u]
        if missing:
            raise BadRequest(f"user {missing[0]} lacks city, country or creditlimit")
        _, vectors = service.embed_customers(
            [(None, CustomerFeatures(u["city"], u["country"], float(u["creditlimit"]))) for u in users])
        return _response(200, [[round(float(x), 6) for x in v] for v in vectors])
    if (method, path) == ("POST", "/items_from_user"):
        vector = _body(event)
        if not isinstance(vector, list):
            raise BadRequest("body must be one embedding (a list of numbers)")
        try:
            _, found = service.items_from_user(vector, _limit(params))
        except ValueError as e:
            raise BadRequest(f"body must be {e}") from None
        return _response(200, _neighbours(found))
    if (method, path) == ("GET", "/items_from_item"):
        item = params.get("item_id")
        if not item:
            raise BadRequest("query parameter item_id is required")
        _, found = service.items_from_item(item, _limit(params))
        if found is None:
            return _response(404, {"error": f"unknown item_id {item!r}"})
        return _response(200, _neighbours(found))
    return _response(404, {"error": f"no route {method} {path}"})


def function_url(service: InferenceService, event: dict) -> dict:
    """Answer a Function URL request (payload 2.0): 200, 400 with the reason, 404, or 503."""
    method = event["requestContext"]["http"]["method"].upper()
    path = event.get("rawPath") or event["requestContext"]["http"].get("path", "")
    params = event.get("queryStringParameters") or {}
    try:
        return _route(service, method, path, params, event)
    except BadRequest as e:
        return _response(400, {"error": str(e)})
    except RecsysError as e:
        return _response(503, {"error": str(e)})


def is_function_url_event(event: dict) -> bool:
    return isinstance(event.get("requestContext"), dict) and "http" in event["requestContext"]


def make_server(service: InferenceService, port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """The routes over local HTTP: each request becomes the Function URL event `function_url` answers."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _call(self, method: str) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode() if length else None
            event = {"version": "2.0", "rawPath": url.path, "rawQueryString": url.query,
                     "queryStringParameters": dict(parse_qsl(url.query)) or None, "body": body,
                     "isBase64Encoded": False, "requestContext": {"http": {"method": method, "path": url.path}}}
            try:
                response = function_url(service, event)
            except Exception as e:  # noqa: BLE001 - an HTTP client gets a 500 with the reason, not a dropped socket
                response = {"statusCode": 500, "body": json.dumps({"error": f"{type(e).__name__}: {e}"})}
            payload = response.get("body", "").encode()
            self.send_response(response.get("statusCode", 200))
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            self._call("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._call("POST")

        def log_message(self, format: str, *args) -> None:  # quiet by default
            pass

    return ThreadingHTTPServer((host, port), Handler)
