"""The two Lambda handlers against a real published model and the embedded pgvector."""

import base64
import datetime as dt
import json

import pytest

from recsys_platform.serving.handlers import ModelInference, StreamTransformation, decode_output
from recsys_platform.serving.messages import RecommendationBatch, recommend_payload
from recsys_platform.serving.service import InferenceService
from recsys_platform.streaming.firehose import StreamRecord, check_response, transformation_request
from recsys_platform.streaming.records import event_of
from recsys_platform.vectors.store import VectorStore
from tests.lambda_events import function_url_event


def _event(n=0, **overrides):
    base = {"session_id": f"s{n}", "customer_number": 103, "city": "Nantes", "country": "France",
            "credit_limit": 21000, "browse_history": [
                {"product_code": "S10_1678", "quantity": 2, "in_shopping_cart": True}]}
    base.update(overrides)
    return base


def _request(payloads: list[bytes]):
    import datetime as dt

    now = dt.datetime.now(dt.timezone.utc)
    records = [StreamRecord(str(1000 + n), "pk", p, now) for n, p in enumerate(payloads)]
    return transformation_request(records, "arn:aws:kinesis:us-east-1:000000000000:stream/events",
                                  "arn:aws:firehose:us-east-1:000000000000:deliverystream/recs", "us-east-1")


def _payload(obj) -> bytes:
    return json.dumps(obj).encode()


def test_every_kind_of_record_gets_exactly_one_answer_with_its_reason(catalog):
    p, c = catalog["products"], catalog["customers"]
    cart = [{"product_code": p[0], "quantity": 1, "in_shopping_cart": True},
            {"product_code": p[1], "quantity": 1, "in_shopping_cart": False}]
    good = [
        _event(1, customer_number=int(c[0]), browse_history=cart),                          # known, with features
        _event(2, customer_number=999_999, browse_history=cart),                            # new customer
        {k: v for k, v in _event(3, customer_number=int(c[1]), browse_history=cart).items()
         if k not in ("city", "country", "credit_limit")},                                  # known, no features
        _event(10, customer_number=int(c[0]), browse_history=cart, event_time="2026-12-03T10:15:00",
               recommendation_id="a" * 32),                                                 # a sales platform's
    ]
    bad = {
        "data is not valid base64": None,
        "data is not valid JSON": b"{nope",
        "missing field customer_number": _payload({k: v for k, v in _event(4).items() if k != "customer_number"}),
        "field customer_number must be int, got str": _payload(_event(5, customer_number="103")),
        "browse_history is empty": _payload(_event(6, browse_history=[])),
        "unknown product code(s) ['S99_0000']": _payload(_event(7, browse_history=[
            {"product_code": "S99_0000", "quantity": 1, "in_shopping_cart": True}])),
        "unknown customer 424242 without features": _payload({k: v for k, v in _event(
            8, customer_number=424242, browse_history=cart).items() if k not in ("city", "country", "credit_limit")}),
        "bytes, more than 65536": _payload(_event(9, session_id="x" * 70_000, browse_history=cart)),
        "field event_time 'yesterday' is not an ISO 8601 time": _payload(_event(11, event_time="yesterday")),
        "field event_time '1970-01-01T00:00:00' is before 2000-01-01": _payload(_event(12, event_time="1970-01-01T00:00:00")),
        "field recommendation_id must be str, got int": _payload(_event(13, recommendation_id=7)),
        "field recommendation_id has 65 characters": _payload(_event(14, recommendation_id="r" * 65)),
    }
    payloads = [_payload(e) for e in good] + [b or b"" for b in bad.values()]
    request = _request(payloads)
    request["records"][len(good)]["data"] = "%%% not base64 %%%"
    response = catalog["transform"](request)
    answered = check_response(request, response)  # each recordId exactly once, valid results
    results = [answered[r["recordId"]] for r in request["records"]]
    assert [r["result"] for r in results] == ["Ok"] * len(good) + ["ProcessingFailed"] * len(bad)
    for expected, r in zip(bad, results[len(good):]):
        assert expected in r["errorMessage"]
    out = decode_output(results[0])
    assert out["session_id"] == "s1" and out["model_version"] == catalog["version"]
    assert len(out["recommended_items"]) == 5
    assert not {i["id"] for i in out["recommended_items"]} & {p[0], p[1]}, "nothing already in the session"
    assert out["similar_items"]["product_code"] == p[0]
    assert len(out["similar_items"]["similar_items"]) == 5
    assert "processed_at" in out and out["browse_history"] == cart
    arrived = dt.datetime.fromisoformat(out["arrived_at"])
    assert int(arrived.timestamp() * 1000) == request["records"][0]["approximateArrivalTimestamp"]
    acted = decode_output(results[3])
    assert acted["event_time"] == "2026-12-03T10:15:00", "the event as received"
    assert acted["acted_on_recommendation_id"] == "a" * 32 != acted["recommendation_id"], \
        "the list acted on is kept beside the answer's own id"
    assert event_of(acted) == good[3], "the record gives its event back"
    assert base64.b64decode(results[0]["data"]).endswith(b"\n")


def _through_the_inference_lambda(handler: ModelInference, calls: list):
    """What `LambdaInvoker` does, without the network: the batch as the JSON event the inference
    Lambda receives, its JSON answer read back into the typed batch."""
    def infer(requests, k):
        payload = json.loads(json.dumps(recommend_payload(requests, k)))
        calls.append(payload)
        return RecommendationBatch.from_json(json.loads(json.dumps(handler(payload))))

    return infer


def test_inference_is_called_once_per_batch_and_the_lambdas_json_changes_nothing(catalog):
    calls = []
    transform = StreamTransformation(_through_the_inference_lambda(catalog["inference"], calls))
    request = _request([_payload(_event(n, customer_number=int(catalog["customers"][n]),
                                        browse_history=[{"product_code": catalog["products"][n], "quantity": 1,
                                                         "in_shopping_cart": True}])) for n in range(20)])
    response = transform(request)
    assert len(calls) == 1 and len(calls[0]["requests"]) == 20
    assert all(r["result"] == "Ok" for r in response["records"])
    in_process = catalog["transform"](request)
    per_answer = ("processed_at", "recommendation_id")  # each answer's own

    def strip(records):
        return [{k: v for k, v in decode_output(r).items() if k not in per_answer} for r in records]

    assert strip(response["records"]) == strip(in_process["records"]), \
        "in-process and through lambda:Invoke give the same records"
    ids = [decode_output(r)["recommendation_id"] for r in response["records"] + in_process["records"]]
    assert len(set(ids)) == 40 and all(len(i) == 32 for i in ids), "every answer its own id"


def test_vector_database_down_fails_the_whole_batch_for_a_retry(catalog):
    down = InferenceService(catalog["service"].models, VectorStore("postgresql://x@127.0.0.1:1/x", connect_timeout=2))
    with pytest.raises(Exception, match="vector database"):
        StreamTransformation(down.recommend)(_request([_payload(_event(1))]))


def _http(handler, method, path, body=None, **params):
    return handler(function_url_event(method, path, body, **params))


def test_function_url_routes_answer_like_the_lab(catalog):
    r = _http(catalog["inference"], "POST", "/user_embeddings", [{"city": "Nantes", "country": "France", "creditlimit": 21000}])
    assert r["statusCode"] == 200
    (vector,) = json.loads(r["body"])
    assert len(vector) == 32
    r = _http(catalog["inference"], "POST", "/items_from_user", vector, limit="3")
    items = json.loads(r["body"])
    assert r["statusCode"] == 200 and len(items) == 3 and set(items[0]) == {"id", "score"}
    r = _http(catalog["inference"], "GET", "/items_from_item", item_id=catalog["products"][0], limit="4")
    similar = json.loads(r["body"])
    assert len(similar) == 4 and catalog["products"][0] not in {i["id"] for i in similar}


@pytest.mark.parametrize(("method", "path", "body", "params", "status", "message"), [
    ("GET", "/items_from_item", None, {"item_id": "S99_0000"}, 404, "unknown item_id"),
    ("GET", "/items_from_item", None, {}, 400, "query.item_id: Field required"),
    ("GET", "/items_from_item", None, {"item_id": "S10_1678", "limit": "many"}, 400, "query.limit: Input should be a valid integer"),
    ("POST", "/items_from_user", [1, 2], {}, 400, "at least 32 items"),
    ("POST", "/user_embeddings", [{"city": "Nantes"}], {}, 400, "body[0].country: Field required"),
    ("GET", "/nowhere", None, {}, 404, "no route GET /nowhere"),
])
def test_function_url_errors_are_clear(catalog, method, path, body, params, status, message):
    r = _http(catalog["inference"], method, path, body, **params)
    assert r["statusCode"] == status
    assert message in json.loads(r["body"])["error"]


def test_the_lambda_modules_build_their_handlers_from_the_environment(catalog, monkeypatch, pg_server_dsn):
    """The deployed entry points: thin adapters that compose the same objects from env vars."""
    from lambdas.model_inference import handler as inference_lambda
    from lambdas.stream_transformation import handler as transformation_lambda

    monkeypatch.setenv("RECSYS_ARTIFACTS_URL", catalog["store"].url)
    monkeypatch.setenv("RECSYS_VECTOR_DSN", catalog["vectors"].dsn)
    monkeypatch.delenv("RECSYS_INFERENCE_FUNCTION", raising=False)
    monkeypatch.setattr(inference_lambda, "_handler", None)
    monkeypatch.setattr(transformation_lambda, "_handler", None)
    r = inference_lambda.lambda_handler(function_url_event("GET", "/items_from_item", item_id=catalog["products"][0],
                                                           limit=2))
    assert r["statusCode"] == 200 and len(json.loads(r["body"])) == 2
    response = transformation_lambda.lambda_handler(_request([_payload(_event(1, customer_number=int(
        catalog["customers"][0]), browse_history=[{"product_code": catalog["products"][0], "quantity": 1,
                                                   "in_shopping_cart": True}]))]))
    assert [r["result"] for r in response["records"]] == ["Ok"]
    assert decode_output(response["records"][0])["model_version"] == catalog["version"]


# What serving must never load: the training and batch libraries (their import dominated a cold start).
TRAINING_LIBRARIES = {"pandas", "pyarrow", "scipy", "sklearn", "numba", "matplotlib", "implicit", "connectorx",
                      "sqlalchemy", "dagster", "dagster_aws", "dagster_pyspark", "pyspark"}


def test_the_lambdas_import_closure_holds_no_training_library(catalog):
    """Both handlers imported and used as a container uses them (a stream batch, a Function URL
    request, a batch action): what they loaded, walked in `sys.modules`, has none of the
    training libraries."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    probe = f"""
import base64, json, sys
from lambdas.model_inference.handler import lambda_handler as inference
from lambdas.stream_transformation.handler import lambda_handler as transformation
from tests.lambda_events import function_url_event
event = {{"session_id": "s", "customer_number": {int(catalog["customers"][0])}, "city": "Nantes", "country": "France",
         "credit_limit": 1000, "browse_history": [{{"product_code": "{catalog["products"][0]}", "quantity": 1,
                                                   "in_shopping_cart": True}}]}}
records = [{{"recordId": "1", "approximateArrivalTimestamp": 0, "data": base64.b64encode(json.dumps(event).encode()).decode()}}]
assert transformation({{"records": records}})["records"][0]["result"] == "Ok"
assert inference(function_url_event("GET", "/items_from_item", item_id="{catalog["products"][0]}", limit="2"))["statusCode"] == 200
print(json.dumps(sorted({{m.split(".")[0] for m in sys.modules}})))
"""
    env = {**os.environ, "RECSYS_ARTIFACTS_URL": catalog["store"].url, "RECSYS_VECTOR_DSN": catalog["vectors"].dsn}
    env.pop("RECSYS_INFERENCE_FUNCTION", None)
    run = subprocess.run([sys.executable, "-c", probe], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-3000:]
    loaded = set(json.loads(run.stdout.strip().splitlines()[-1]))
    assert {"numpy", "psycopg", "fastapi"} <= loaded, "the serving path ran"
    assert not loaded & TRAINING_LIBRARIES, loaded & TRAINING_LIBRARIES
