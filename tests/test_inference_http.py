"""The model inference HTTP app: over real HTTP (uvicorn, as `serve` runs it) and as the Lambda's
Function URL (Mangum): the lab's routes, hostile input, limits, fuzzing from the schema, load."""

from __future__ import annotations

import http.client
import json
import socket
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import pytest
import schemathesis
from hypothesis import HealthCheck
from hypothesis import settings as hsettings

from recsys_platform.serving.handlers import ModelInference
from recsys_platform.serving.http import (
    MAX_BODY_BYTES,
    RECOMMENDATION_HEADER,
    VERSION_HEADER,
    create_app,
    serving,
)
from recsys_platform.serving.service import InferenceService, ModelCache
from recsys_platform.vectors.store import VectorStore
from tests.lambda_events import function_url_event


@pytest.fixture(scope="module")
def base_url(catalog):
    with serving(catalog["service"]) as url:
        yield url


def _call(base_url: str, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    """(status, headers, parsed JSON body) with urllib, as the lab's client calls the API."""
    req = urllib.request.Request(base_url + path, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, resp.headers, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, e.headers, json.loads(e.read())


def test_the_lab_client_flow_works_unchanged(catalog, base_url):
    """The lab's calls: JSON bodies sent without a content type, answers in the lab's shapes."""
    status, headers, vectors = _call(base_url, "POST", "/user_embeddings",
                                     json.dumps([{"city": "Paris", "country": "France", "creditlimit": 5000}]).encode())
    assert status == 200 and len(vectors) == 1 and len(vectors[0]) == 32
    assert headers[VERSION_HEADER] == catalog["version"], "every answer carries its model version"
    assert len(headers[RECOMMENDATION_HEADER]) == 32, "and its own recommendation id"
    status, _, items = _call(base_url, "POST", "/items_from_user?limit=2", json.dumps(vectors[0]).encode())
    assert status == 200 and len(items) == 2 and set(items[0]) == {"id", "score"}
    status, _, similar = _call(base_url, "GET", f"/items_from_item?item_id={catalog['products'][0]}&limit=3")
    assert status == 200 and len(similar) == 3
    status, headers, body = _call(base_url, "GET", "/items_from_item?item_id=NOPE")
    assert status == 404 and body == {"error": "unknown item_id 'NOPE'"} and headers[VERSION_HEADER]


BAD_REQUESTS = [
    ("creditlimit abc", "POST", "/user_embeddings", b'[{"city":"Paris","country":"France","creditlimit":"abc"}]', 400,
     "body[0].creditlimit: Input should be a valid number"),
    ("creditlimit null", "POST", "/user_embeddings", b'[{"city":"Paris","country":"France","creditlimit":null}]', 400,
     "body[0].creditlimit"),
    ("an empty list", "POST", "/user_embeddings", b"[]", 400, "at least 1 item"),
    ("not UTF-8", "POST", "/user_embeddings", b"\xff\xfe[]", 400, "body is not valid JSON"),
    ("not JSON", "POST", "/user_embeddings", b"{nope", 400, "body is not valid JSON"),
    ("NaN in an embedding", "POST", "/items_from_user", b"[NaN" + b",0.1" * 31 + b"]", 400, "finite number"),
    ("1e39 in an embedding", "POST", "/items_from_user", b"[1e39" + b",0.1" * 31 + b"]", 400, "less than or equal"),
    ("a short embedding", "POST", "/items_from_user", b"[1, 2]", 400, "body: List should have at least 32 items"),
    ("NUL in item_id", "GET", "/items_from_item?item_id=S10%001678", None, 400, "query.item_id: must be printable"),
    ("a limit of 0", "GET", "/items_from_item?item_id=S10_1678&limit=0", None, 400, "query.limit"),
    ("PUT", "PUT", "/user_embeddings", b"[]", 405, "method PUT is not allowed on /user_embeddings (allowed: POST)"),
    ("DELETE", "DELETE", "/items_from_item", None, 405, "method DELETE is not allowed"),
    ("an unknown path", "GET", "/admin", None, 404, "no route GET /admin"),
]


@pytest.mark.parametrize(("case", "method", "path", "body", "status", "message"), BAD_REQUESTS,
                         ids=[c[0] for c in BAD_REQUESTS])
def test_bad_input_gets_a_json_reason_not_a_500(base_url, case, method, path, body, status, message):
    got, headers, payload = _call(base_url, method, path, body)
    assert got == status and message in payload["error"], payload
    assert headers["content-type"] == "application/json"


def _raw(base_url: str, head: bytes, body: bytes = b"", timeout: float = 10) -> bytes:
    """Send raw bytes, read until the server answers or closes (a hang fails by timeout)."""
    host, port = urlsplit(base_url).hostname, urlsplit(base_url).port
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.sendall(head + body)
        chunks = []
        while True:
            data = s.recv(65536)
            if not data:
                break
            chunks.append(data)
            if b"\r\n\r\n" in b"".join(chunks):
                break
        return b"".join(chunks)


def test_a_body_over_6_mb_is_refused_with_413(base_url):
    head = (f"POST /user_embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {20 * 1024 * 1024}\r\n\r\n").encode()
    answer = _raw(base_url, head, b"[" * 65536)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert f"more than {MAX_BODY_BYTES:,}".encode() in answer or b"413" in answer


def test_a_streamed_body_over_6_mb_is_refused_too(base_url):
    conn = http.client.HTTPConnection(urlsplit(base_url).hostname, urlsplit(base_url).port, timeout=30)

    def chunks():
        for _ in range(7):
            yield b" " * (1024 * 1024)

    try:
        conn.request("POST", "/user_embeddings", body=chunks(), encode_chunked=True,
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 413 and "more than" in json.loads(resp.read())["error"]
    except (BrokenPipeError, ConnectionResetError):
        pytest.fail("the server dropped the connection instead of answering 413")
    finally:
        conn.close()


def test_a_negative_content_length_is_a_400_not_a_hang(base_url):
    answer = _raw(base_url, b"POST /user_embeddings HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400"), answer[:200]


def test_an_unavailable_database_is_a_503_that_names_no_internals(catalog, tmp_path):
    dead = VectorStore(f"postgresql://postgres@/postgres?host={tmp_path}/nowhere", connect_timeout=2)
    service = InferenceService(ModelCache(catalog["store"], dead), dead)
    with serving(service) as url:
        status, _, body = _call(url, "GET", f"/items_from_item?item_id={catalog['products'][0]}")
    assert status == 503 and body == {"error": "the model or the vector database is unavailable; try again later"}
    assert str(tmp_path) not in json.dumps(body)


def test_a_request_stuck_behind_a_lock_times_out_with_504(catalog, pg_dsn):
    """A real stall: another session holds an exclusive lock on the version's item table."""
    import psycopg

    from recsys_platform.ml import artifacts
    from tests.conftest import load_serving_catalog

    vectors = VectorStore(pg_dsn)
    _, manifest, emb = artifacts.load_embeddings(catalog["store"], catalog["version"])
    vectors.load_version(catalog["version"], emb["item"], emb["user"], manifest["dim"])
    vectors.activate(catalog["version"])
    load_serving_catalog(vectors, catalog["frame"])
    service = InferenceService(ModelCache(catalog["store"], vectors), vectors)
    service.models.get()
    with serving(service, request_timeout_s=1.0) as url, psycopg.connect(pg_dsn) as blocker:
        blocker.execute(f'LOCK TABLE "item_emb__{catalog["version"].lower()}" IN ACCESS EXCLUSIVE MODE')
        status, _, body = _call(url, "GET", f"/items_from_item?item_id={catalog['products'][0]}")
        blocker.rollback()
    assert (status, body) == (504, {"error": "no answer within 1 s; try again later"})
    vectors.close()


def test_200_concurrent_clients_all_get_answers(catalog, base_url):
    """Before: stdlib `http.server` (listen queue 5) reset 87-113 of 200 concurrent requests."""
    product = catalog["products"][0]

    def one(n: int) -> int:
        return _call(base_url, "GET", f"/items_from_item?item_id={product}&limit={1 + n % 10}")[0]

    with ThreadPoolExecutor(max_workers=200) as pool:
        statuses = list(pool.map(one, range(200)))
    assert statuses == [200] * 200


def test_the_function_url_runs_the_same_app(catalog):
    handler = ModelInference(catalog["service"])
    r = handler(function_url_event("POST", "/user_embeddings", raw_body="not base64 %%%", base64_body=False,
                                   headers={"content-type": "application/json"}))
    assert r["statusCode"] == 400 and "not valid JSON" in json.loads(r["body"])["error"]
    event = function_url_event("POST", "/user_embeddings", [{"city": "Paris", "country": "France", "creditlimit": 1}])
    event["body"], event["isBase64Encoded"] = "%%%not-base64", True
    r = handler(event)
    assert r["statusCode"] == 400, r
    r = handler(function_url_event("GET", "/items_from_item", item_id=catalog["products"][0], limit=2))
    assert r["statusCode"] == 200 and r["headers"][VERSION_HEADER.lower()] == catalog["version"]
    r = handler(function_url_event("PUT", "/items_from_item"))
    assert r["statusCode"] == 405


@pytest.fixture(scope="module")
def api_schema(catalog):
    return schemathesis.openapi.from_asgi("/openapi.json", create_app(catalog["service"]))


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@hsettings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_fuzzed_from_the_schema_never_a_server_error(case):
    """Generated requests (valid and not) get a documented answer, never a 5xx."""
    response = case.call()
    assert response.status_code < 500, (case.method, case.path, case.query, case.body, response.text[:300])
    case.validate_response(response)
