"""The streaming edge under hostile input: a bad record costs only itself, the response stays within
Lambda's limit, and every answer comes from one model version with that version's vectors."""

from __future__ import annotations

import base64
import json
import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsys_platform.batch.seed import training_table
from recsys_platform.ml import artifacts
from recsys_platform.ml.hybrid import HybridRecommender, HybridSettings
from recsys_platform.ml.spec import RETAIL
from recsys_platform.ml.training import train_recommender
from recsys_platform.serving import handlers
from recsys_platform.serving.handlers import ModelInference, StreamTransformation, decode_output
from recsys_platform.serving.messages import CustomerFeatures, RecommendationRequest
from recsys_platform.serving.service import InferenceService, ModelCache
from recsys_platform.storage.object_store import ObjectStore
from recsys_platform.streaming import firehose
from recsys_platform.streaming.firehose import check_response
from recsys_platform.vectors.store import VectorStore, VectorStoreError
from tests.test_lambdas import _event, _payload, _request


def _good(catalog, n: int) -> dict:
    c, p = catalog["customers"], catalog["products"]
    return _event(n, customer_number=int(c[n % len(c)]), browse_history=[
        {"product_code": p[n % len(p)], "quantity": 1, "in_shopping_cart": True}])


HOSTILE = {
    "customer_number of 2^31": (lambda e: {**e, "customer_number": 2**31}, "customer_number must be between"),
    "customer_number of 2^64": (lambda e: {**e, "customer_number": 2**64}, "customer_number must be between"),
    "credit_limit 1e300": (lambda e: {**e, "credit_limit": 1e300}, "credit_limit must be between"),
    "product_code with NUL": (lambda e: {**e, "browse_history": [{**e["browse_history"][0], "product_code": "S10\x001678"}]},
                              "contains a NUL"),
    "product_code with a lone surrogate": (lambda e: {**e, "browse_history": [
        {**e["browse_history"][0], "product_code": "S10_\ud800"}]}, "lone surrogate"),
    "city longer than the column": (lambda e: {**e, "city": "x" * 51}, "more than 50"),
}


@pytest.mark.parametrize("kind", sorted(HOSTILE))
def test_one_bad_record_among_49_good_fails_alone(catalog, kind):
    """Each of these values passed validation before and failed the whole batch in the database."""
    spoil, reason = HOSTILE[kind]
    events = [_good(catalog, n) for n in range(50)]
    payloads = [_payload(e) for e in events]
    payloads[17] = json.dumps(spoil(events[17])).encode("utf-8", "surrogatepass")
    response = catalog["transform"](_request(payloads))
    results = [r["result"] for r in response["records"]]
    assert results.count("Ok") == 49 and results[17] == "ProcessingFailed"
    assert reason in response["records"][17]["errorMessage"]


@pytest.mark.parametrize(("literal", "reason"), [("Infinity", "Infinity is not a JSON number"),
                                                  ("NaN", "NaN is not a JSON number"),
                                                  ("1e400", "credit_limit must be between")])
def test_non_finite_numbers_in_the_json_fail_their_record(catalog, literal, reason):
    good = _payload(_good(catalog, 1))
    bad = _payload(_good(catalog, 2)).replace(b'"credit_limit": 21000', f'"credit_limit": {literal}'.encode())
    response = catalog["transform"](_request([good, bad, good]))
    assert [r["result"] for r in response["records"]] == ["Ok", "ProcessingFailed", "Ok"]
    assert reason in response["records"][1]["errorMessage"]


def test_values_the_database_refuses_fail_only_their_request(catalog):
    """Below event validation too: the service isolates what PostgreSQL refuses (bisection)."""
    service = catalog["service"]
    c, p = catalog["customers"], catalog["products"]

    def request(n, **bad):
        r = {"key": str(n), "customer_number": int(c[n]), "features": None, "products": [p[n]], "anchor": p[n]}
        return {**r, **bad}

    requests = [request(n) for n in range(12)]
    requests[3] = request(3, customer_number=2**40)                # integer out of range for int[]
    requests[7] = request(7, products=["S10\x00X"], anchor="S10\x00X")  # NUL in text
    requests[9] = {"key": "9"}                                     # a malformed request
    answer = ModelInference(service)({"action": "recommend", "k": 5, "requests": requests})
    errors = {r["key"]: r.get("error") for r in answer["results"]}
    assert [k for k, e in errors.items() if e] == ["3", "7", "9"]
    assert "refused a value" in errors["3"] and "NUL" in errors["7"] and "missing" in errors["9"]
    assert answer["model_version"] == catalog["version"]


# -- property: every recordId answered once, good records Ok whatever their neighbours ---------------
_text = st.text(alphabet=st.characters(codec=None, min_codepoint=0, max_codepoint=0xDFFF), max_size=20)
_hostile_value = st.one_of(st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=True, allow_infinity=True),
                           _text, st.none(), st.booleans(), st.lists(st.integers(), max_size=3))
_field = st.sampled_from(["session_id", "customer_number", "city", "country", "credit_limit", "browse_history",
                          "product_code", "quantity", "in_shopping_cart"])


def _spoil(event: dict, field: str, value) -> bytes:
    event = json.loads(json.dumps(event))
    if field in ("product_code", "quantity", "in_shopping_cart"):
        event["browse_history"][0][field] = value
    else:
        event[field] = value
    return json.dumps(event, allow_nan=True).encode("utf-8", "surrogatepass")


_record = st.one_of(
    st.tuples(st.just("good"), st.integers(min_value=0, max_value=10_000)),
    st.tuples(st.just("bad"), st.tuples(st.integers(min_value=0, max_value=10_000), _field, _hostile_value)),
    st.tuples(st.just("bytes"), st.binary(max_size=64)),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(records=st.lists(_record, min_size=1, max_size=30))
def test_any_mix_of_records_is_answered_exactly_once_and_good_ones_are_ok(catalog, records):
    payloads, good = [], []
    for n, (kind, value) in enumerate(records):
        if kind == "good":
            payloads.append(_payload(_good(catalog, value)))
            good.append(n)
        elif kind == "bad":
            payloads.append(_spoil(_good(catalog, value[0]), value[1], value[2]))
        else:
            payloads.append(value)
    request = _request(payloads)
    answered = check_response(request, catalog["transform"](request))
    results = [answered[r["recordId"]] for r in request["records"]]
    assert all(results[n]["result"] == "Ok" for n in good), [r.get("errorMessage") for r in results]
    for r in results:
        if r["result"] == "Ok":
            out = decode_output(r)
            assert out["model_version"] == catalog["version"] and len(out["recommended_items"]) == 5
        else:
            assert r["errorMessage"], "a failure says why"


# -- the response-size budget -------------------------------------------------------------------
def _smallest_ok_event(catalog) -> bytes:
    """The valid event with the largest expansion: the fewest bytes that still get recommendations."""
    code = min(catalog["products"], key=len)
    return json.dumps({"session_id": "a", "customer_number": int(catalog["customers"][0]), "browse_history": [
        {"product_code": code, "quantity": 0, "in_shopping_cart": False}]}, separators=(",", ":")).encode()


def _kinesis_record_ids(request: dict) -> dict:
    for n, r in enumerate(request["records"]):  # Kinesis sequence numbers are 56 digits long
        r["recordId"] = f"{49546986683135544286507457936321625675700192471156785154 + n}-0"
    return request


def test_a_full_processor_buffer_of_worst_case_events_fits_the_response_limit(catalog):
    event = _smallest_ok_event(catalog)
    count = firehose.PROCESSOR_BUFFER_BYTES // len(event)
    request = _kinesis_record_ids(_request([event] * count))
    response = catalog["transform"](request)
    size = firehose.payload_size(response)
    assert all(r["result"] == "Ok" for r in response["records"])
    assert size <= firehose.RESPONSE_LIMIT, f"{size:,} bytes for {count:,} records"
    check_response(request, response)


def test_a_batch_larger_than_the_budget_answers_every_record_within_the_limit(catalog):
    """1 MiB of the smallest events would answer with about 8 MB: the handler fails the overflow
    with its reason (raw data kept for processing-failed/), never an oversized response."""
    event = _smallest_ok_event(catalog)
    request = _kinesis_record_ids(_request([event] * ((1 << 20) // len(event))))
    response = catalog["transform"](request)
    assert firehose.payload_size(response) <= firehose.RESPONSE_LIMIT
    answered = check_response(request, response)
    results = [answered[r["recordId"]]["result"] for r in request["records"]]
    ok, failed = results.count("Ok"), results.count("ProcessingFailed")
    assert ok + failed == len(results) and ok > 0 and failed > 0
    assert results == ["Ok"] * ok + ["ProcessingFailed"] * failed, "the first records are kept"
    assert all(r["errorMessage"] == handlers.BUDGET_REASON and base64.b64decode(r["data"]) == event
               for r in response["records"][ok:])


def test_the_local_runtime_refuses_an_oversized_response_like_lambda():
    request = _request([b"{}"])
    big = {"records": [{"recordId": request["records"][0]["recordId"], "result": "Ok",
                        "data": base64.b64encode(b"x" * (firehose.RESPONSE_LIMIT)).decode()}]}
    with pytest.raises(firehose.ContractError, match="payload limit"):
        check_response(request, big)


# -- one version per answer ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_model():
    frame = training_table()
    run = train_recommender(frame, RETAIL, HybridSettings(max_iter=30), l2_grid=None)
    s = run.model.spec
    return (run.model, frame[s.user_columns()].drop_duplicates(s.user_id),
            frame[s.item_columns()].drop_duplicates(s.item_id), run.metrics)


def _publish(store, small_model, version: str, scale: float = 1.0):
    model, users, items, metrics = small_model
    original = model.item_weights
    model.item_weights = original * scale  # a different model: other scores, same catalog
    try:
        return artifacts.publish(store, model, users, items, metrics, "test", version=version)
    finally:
        model.item_weights = original


def _load(vectors: VectorStore, store, version: str, activate: bool = True) -> None:
    from tests.conftest import load_serving_catalog

    _, manifest, emb = artifacts.load_embeddings(store, version)
    vectors.load_version(version, emb["item"], emb["user"], manifest["dim"])
    load_serving_catalog(vectors, training_table())
    if activate:
        vectors.activate(version)
        artifacts.set_current(store, version)


ASKED = {"customerNumber": None, "city": "Paris", "country": "France", "creditLimit": 5000.0}


def _ask(service: InferenceService, catalog) -> tuple[str, str, float]:
    """(version, top item, its score) for one new customer from Paris."""
    product = catalog["products"][0]
    answer = service.recommend([RecommendationRequest(
        "a", 999_999, CustomerFeatures(ASKED["city"], ASKED["country"], ASKED["creditLimit"]), frozenset([product]),
        product)])
    top = answer.results[0].recommended[0]
    return answer.model_version, top.id, top.score


def _expected_score(store, version: str, item: str) -> float:
    """The score `version`'s model gives `item` from `version`'s published vectors."""
    import pandas as pd


    _, model = HybridRecommender.load(store, version)
    user = model.user_embeddings(pd.DataFrame([ASKED]))[0]
    _, _, emb = artifacts.load_embeddings(store, version)
    ids, vectors = emb["item"]
    return float(user @ vectors[ids.index(item)])


@pytest.fixture
def v1_serving(small_model, pg_dsn, tmp_path):
    """An artifacts bucket and a vector database where version V1 is published, loaded and active."""
    store = ObjectStore.from_url((tmp_path / "art").as_uri())
    vectors = VectorStore(pg_dsn)
    _publish(store, small_model, "V1")
    _load(vectors, store, "V1")
    yield store, vectors
    vectors.close()


def test_a_model_serves_only_with_its_own_vectors(catalog, small_model, v1_serving):
    store, vectors = v1_serving
    service = InferenceService(ModelCache(store, vectors, check_seconds=0), vectors)
    v1_answer = _ask(service, catalog)
    assert v1_answer[0] == "V1"

    _publish(store, small_model, "V2", scale=2.0)  # published: LATEST moves, nothing serves it yet
    assert artifacts.latest_version(store) == "V2" and artifacts.current_version(store) == "V1"
    assert _ask(service, catalog) == v1_answer
    _load(vectors, store, "V2", activate=False)    # loaded but not switched: still V1
    assert _ask(service, catalog) == v1_answer

    assert math.isclose(v1_answer[2], _expected_score(store, "V1", v1_answer[1]), rel_tol=1e-4)
    vectors.activate("V2")
    version, item, score = _ask(service, catalog)
    assert version == "V2" and math.isclose(score, _expected_score(store, "V2", item), rel_tol=1e-4), \
        "V2's model on V2's vectors"
    assert score != v1_answer[2]


def test_an_unreadable_new_version_leaves_the_loaded_pair_serving_with_backoff(catalog, small_model, v1_serving,
                                                                                caplog):
    store, vectors = v1_serving
    cache = ModelCache(store, vectors, check_seconds=0.5)
    service = InferenceService(cache, vectors)
    before = _ask(service, catalog)

    _publish(store, small_model, "V2", scale=3.0)
    store.write_bytes("V2/model/weights.npz", b"not the published weights")  # corrupt after publishing
    _load(vectors, store, "V2")                                              # its vectors switch in
    cache._next_check = 0  # check now
    assert _ask(service, catalog) == before, "V1's model with V1's vectors, not V1's model on V2's vectors"
    assert cache.failures == 1 and "checksum mismatch for model/weights.npz" in cache.last_error
    assert "keeps serving" in caplog.text
    for _ in range(5):
        assert _ask(service, catalog) == before
    assert cache.failures == 1, "no reload attempt on every request: it backs off"


def test_a_failed_vector_load_leaves_the_previous_pair_serving(catalog, small_model, v1_serving):
    store, vectors = v1_serving
    service = InferenceService(ModelCache(store, vectors, check_seconds=0), vectors)
    _publish(store, small_model, "V2")
    _, manifest, emb = artifacts.load_embeddings(store, "V2")
    ids, vecs = emb["item"]
    with pytest.raises(VectorStoreError):
        vectors.load_version("V2", (ids, np.full_like(vecs, np.nan)), emb["user"], manifest["dim"])
    assert vectors.active_version() == "V1" and artifacts.current_version(store) == "V1"
    assert _ask(service, catalog)[0] == "V1"


def test_an_outage_raises_for_a_retry_and_says_so(catalog):
    down = InferenceService(catalog["service"].models, VectorStore("postgresql://x@127.0.0.1:1/x", connect_timeout=2))
    with pytest.raises(VectorStoreError, match="vector database"):
        StreamTransformation(down.recommend)(_request([_payload(_good(catalog, 1))]))
