"""The model inference HTTP API (the lab's routes): one FastAPI app over an `InferenceService`.

The same app answers locally (`recsys-platform serve`, uvicorn) and on AWS (the inference
Lambda's Function URL, through Mangum), so the local API and the deployed one run the same code:

    POST /user_embeddings          body [{"city","country","creditlimit"}]  -> [[...], ...]
    POST /items_from_user?limit=N  body [..embedding..]                     -> [{"id","score"}]
    GET  /items_from_item?item_id=S10_1678&limit=N                          -> [{"id","score"}]

Every answer carries the model version it was computed with (header `X-Model-Version`; the lab's
bodies stay as they were). The two item routes obey the serving rules (`vectors.rules`): the
deployment's defaults (nothing out of stock), changed per request by optional query parameters
(`exclude_bought` with `customer`, `product_line` and `exclude_product_line`, repeatable,
`min_price`, `max_price`, `in_stock_only`); when fewer items than `limit` pass, the body holds those
that do and the header `X-Recommendations-Note` says so. Request models reject bad input with 400 and a JSON `{"error": ...}`
naming the field; a body over 6 MB (a Function URL's limit) gets 413, a wrong method 405, an
unknown path 404. Each request has a time limit (504); an unavailable model or database is a 503
whose message names no host, socket or bucket (the detail goes to the log).
"""

# No `from __future__ import annotations`: FastAPI reads the routes' annotations at definition
# time, and the embedding length in them is a local of `create_app`.
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import anyio
from fastapi import Body, Depends, FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.exceptions import StarletteHTTPException as HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from recsys_platform.errors import RecsysError
from recsys_platform.serving.messages import CustomerFeatures, new_recommendation_id
from recsys_platform.serving.service import InferenceService
from recsys_platform.streaming.events import MAX_CREDIT_LIMIT, MAX_INT32, TEXT_LIMITS
from recsys_platform.vectors.rules import (
    LINE_PATTERN,
    MAX_LINE_LENGTH,
    MAX_LINES,
    MAX_PRICE,
    RuleError,
    Rules,
)
from recsys_platform.vectors.store import VectorDataError

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 6 * 1024 * 1024  # a Lambda Function URL's request payload limit
MAX_LIMIT = 100
MAX_USERS = 1000
EMBEDDING_DIM = 32  # the contract's embedding dimension (docs/ml.md)
REQUEST_TIMEOUT_S = 30.0
# An embedding value's bound: model embeddings are of order 1, and with this bound an inner product
# with any stored item vector stays finite (float32 overflows at 3.4e38, where pgvector says inf).
EMBEDDING_VALUE_LIMIT = 1e6
VERSION_HEADER = "X-Model-Version"
NOTE_HEADER = "X-Recommendations-Note"
RECOMMENDATION_HEADER = "X-Recommendation-Id"  # the answer's id (the body keeps the lab's shape)

_PRINTABLE = r"^[^\x00-\x1f\x7f]*$"  # no NUL or other control characters
Text = Annotated[str, StringConstraints(min_length=1, max_length=TEXT_LIMITS["city"], pattern=_PRINTABLE)]
# JSON numbers only (strict: `true` or "12" are not numbers; an integer is)
Number = Annotated[float, Field(strict=True, allow_inf_nan=False, ge=-EMBEDDING_VALUE_LIMIT, le=EMBEDDING_VALUE_LIMIT)]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="how many items to return")]
Line = Annotated[str, StringConstraints(min_length=1, max_length=MAX_LINE_LENGTH, pattern=LINE_PATTERN)]


class User(BaseModel):
    """A customer's features, as the lab's client sends them (other fields are ignored)."""

    model_config = ConfigDict(extra="ignore")
    city: Text
    country: Text
    creditlimit: Annotated[float, Field(strict=True, ge=0, le=MAX_CREDIT_LIMIT, allow_inf_nan=False)]


class NeighbourBody(BaseModel):
    """The schema of `vectors.store.Neighbour.to_json`, the one neighbour format."""

    id: str
    score: float


class BadRequest(ValueError):
    """The request's values cannot be answered; the message says why (a 400)."""


class ErrorBody(BaseModel):
    error: str


class BodyLimit:
    """ASGI middleware: 413 for a body over `limit` bytes, declared or streamed; every body is read
    as JSON whatever its content type says (the API speaks nothing else, and the lab's clients send
    JSON without the header, or with urllib's form default, as the old server accepted)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        scope = {**scope, "headers": [*((k, v) for k, v in scope.get("headers", []) if k != b"content-type"),
                                      (b"content-type", b"application/json")]}
        declared = headers.get(b"content-length", b"0")
        if declared.isdigit() and int(declared) > self.limit:
            return await _error(413, f"body is {int(declared):,} bytes, more than {self.limit:,}")(scope, receive, send)
        body, more = [], True  # read here, so a streamed body is cut at the limit too
        size = 0
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return None  # the client went away
            body.append(message.get("body", b""))
            size += len(body[-1])
            if size > self.limit:
                return await _error(413, f"body is more than {self.limit:,} bytes")(scope, receive, send)
            more = message.get("more_body", False)
        replay = [{"type": "http.request", "body": b"".join(body), "more_body": False}]

        async def replayed():
            return replay.pop() if replay else await receive()

        return await self.app(scope, replayed, send)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _validation_message(e: RequestValidationError) -> str:
    """The first problems, each as `where: what` (e.g. `body[0].creditlimit: Input should be ...`)."""
    parts = []
    for err in e.errors()[:3]:
        if err.get("type") == "json_invalid":
            return f"body is not valid JSON ({(err.get('ctx') or {}).get('error', 'decode error')})"
        loc = list(err.get("loc", ())) or ["body"]
        where = str(loc[0]) + "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc[1:])
        what = ("must be printable text (no NUL or control characters)"
                if err.get("type") == "string_pattern_mismatch" else err.get("msg", "invalid"))
        parts.append(f"{where}: {what}")
    return "; ".join(parts)


def create_app(service: InferenceService, request_timeout_s: float = REQUEST_TIMEOUT_S) -> FastAPI:
    """The routes over `service`. The schema's embedding length is the loaded model's dimension
    (the contract's 32 when none is loaded yet); the service checks it again on every call."""
    dim = service.models.model.dim if service.models.model is not None else EMBEDDING_DIM
    app = FastAPI(title="recsys-platform model inference", version="1",
                  description="The lab's routes: user embeddings and similar items from pgvector.",
                  responses={400: {"model": ErrorBody}, 503: {"model": ErrorBody}, 504: {"model": ErrorBody}})

    async def answer(response: Response, fn, *args):
        """Run the service call in a worker thread under the time limit; the version (and a note,
        if any) go in headers. `fn` returns (version, body) or (version, body, note).

        At the limit the request answers 504 and the thread is abandoned; the database's
        statement_timeout (VectorStore.query_timeout_s) ends its query."""
        with anyio.fail_after(request_timeout_s):
            version, body, *note = await anyio.to_thread.run_sync(fn, *args, abandon_on_cancel=True)
        response.headers[VERSION_HEADER] = version
        response.headers[RECOMMENDATION_HEADER] = new_recommendation_id()
        if note and note[0]:
            response.headers[NOTE_HEADER] = note[0]
        return body

    def rules(in_stock_only: Annotated[bool | None, Query(description="false: out-of-stock items too")] = None,
              exclude_bought: Annotated[bool | None, Query(description="leave out what `customer` bought "
                                                                 "(nothing without a customer)")] = None,
              customer: Annotated[int | None, Query(ge=1, le=MAX_INT32, description="the customer's number")] = None,
              product_line: Annotated[list[Line] | None, Query(max_length=MAX_LINES,
                                                              description="only these product lines")] = None,
              exclude_product_line: Annotated[list[Line] | None, Query(max_length=MAX_LINES,
                                                                      description="never these lines")] = None,
              min_price: Annotated[float | None, Query(ge=0, le=MAX_PRICE, allow_inf_nan=False)] = None,
              max_price: Annotated[float | None, Query(ge=0, le=MAX_PRICE, allow_inf_nan=False)] = None):
        """The request's rules: the service's defaults with what the query changes, and the customer."""
        given = {"in_stock_only": in_stock_only, "exclude_bought": exclude_bought, "product_lines": product_line,
                 "exclude_product_lines": exclude_product_line, "min_price": min_price, "max_price": max_price}
        try:
            chosen = Rules.from_json({k: v for k, v in given.items() if v is not None}, base=service.rules)
        except RuleError as e:
            raise BadRequest(str(e).replace("rules.", "query.")) from None
        return chosen, customer

    Rule = Annotated[tuple[Rules, int | None], Depends(rules)]

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError):
        return _error(400, _validation_message(e))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, e: HTTPException):
        if e.status_code == 404:
            return _error(404, f"no route {request.method} {request.url.path}")
        if e.status_code == 405:
            allowed = (e.headers or {}).get("Allow", "")
            return JSONResponse({"error": f"method {request.method} is not allowed on {request.url.path}"
                                 f" (allowed: {allowed})"}, status_code=405, headers=e.headers)
        return _error(e.status_code, str(e.detail))

    @app.exception_handler(BadRequest)
    async def bad_value(request: Request, e: BadRequest):
        return _error(400, str(e))

    @app.exception_handler(VectorDataError)
    async def refused(request: Request, e: VectorDataError):
        return _error(400, "the vector database refused a value of this request")

    @app.exception_handler(RecsysError)
    async def unavailable(request: Request, e: RecsysError):
        log.warning("503 for %s %s: %s", request.method, request.url.path, e)
        return _error(503, "the model or the vector database is unavailable; try again later")

    @app.exception_handler(TimeoutError)
    async def too_slow(request: Request, e: TimeoutError):
        return _error(504, f"no answer within {request_timeout_s:g} s; try again later")

    @app.post("/user_embeddings", response_model=list[list[float]],
              summary="One embedding per customer, from city, country and credit limit")
    async def user_embeddings(users: Annotated[list[User], Body(min_length=1, max_length=MAX_USERS)],
                              response: Response):
        def run():
            try:
                version, vectors = service.embed_customers(
                    [(None, CustomerFeatures(u.city, u.country, u.creditlimit)) for u in users])
            except ValueError as e:
                raise BadRequest(str(e)) from None
            return version, [[round(float(x), 6) for x in v] for v in vectors]

        return await answer(response, run)

    @app.post("/items_from_user", response_model=list[NeighbourBody],
              summary="The items that score highest against one user embedding")
    async def items_from_user(vector: Annotated[list[Number], Body(min_length=dim, max_length=dim)],
                              response: Response, rule: Rule, limit: Limit = 10):
        def run():
            try:
                found = service.items_from_user(vector, limit, *rule)
            except ValueError as e:
                raise BadRequest(f"body must be {e}") from None
            return found.version, [n.to_json() for n in found.items], found.note

        return await answer(response, run)

    @app.get("/items_from_item", response_model=list[NeighbourBody], responses={404: {"model": ErrorBody}},
             summary="The items most similar to one item")
    async def items_from_item(item_id: Annotated[str, Query(min_length=1, max_length=64, pattern=_PRINTABLE)],
                              response: Response, rule: Rule, limit: Limit = 10):
        def run():
            found = service.items_from_item(item_id, limit, *rule)
            return found.version, None if found.items is None else [n.to_json() for n in found.items], found.note

        found = await answer(response, run)
        if found is None:
            return JSONResponse({"error": f"unknown item_id {item_id!r}"}, status_code=404,
                                headers={VERSION_HEADER: response.headers[VERSION_HEADER]})
        return found

    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    return app


def _server(service: InferenceService, port: int, host: str, request_timeout_s: float = REQUEST_TIMEOUT_S):
    import uvicorn

    return uvicorn.Server(uvicorn.Config(create_app(service, request_timeout_s), host=host, port=port, backlog=2048,
                                         timeout_keep_alive=5, log_level="warning", access_log=False))


def serve(service: InferenceService, port: int, host: str = "127.0.0.1", ready=None) -> None:
    """`recsys-platform serve`: the app on uvicorn (a deep listen queue, keep-alive timeout)."""
    server = _server(service, port, host)
    if ready is not None:
        ready(server)
    server.run()


@contextmanager
def serving(service: InferenceService, port: int = 0, host: str = "127.0.0.1",
            request_timeout_s: float = REQUEST_TIMEOUT_S) -> Iterator[str]:
    """The app on uvicorn in a background thread (for tests and benchmarks); yields its base URL."""
    server = _server(service, port, host, request_timeout_s)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the HTTP server did not start on {host}:{port}")
        time.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{bound}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
