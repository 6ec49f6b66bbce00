"""Business rules at serving time, on the real pgvector: nothing out of stock or in the session,
per-request rules, k items whenever k pass, and a note (never a forbidden item) when fewer do."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsys_platform.serving.handlers import StreamTransformation, decode_output
from recsys_platform.serving.service import InferenceService, ModelCache
from recsys_platform.vectors import store as store_module
from recsys_platform.vectors.catalog import (
    ItemAttributes,
    items_from_products,
    load_catalog,
    read_attributes,
    read_purchases,
)
from recsys_platform.vectors.rules import RuleError, Rules
from recsys_platform.vectors.store import SessionQuery, VectorStore, VectorStoreError
from tests.lambda_events import function_url_event
from tests.test_lambdas import _event, _payload, _request

K = 5


@pytest.fixture(scope="module")
def shop(catalog, tmp_path_factory, pg_server_dsn):
    """The catalog's model in a database of its own, where a third of the products are out of stock."""
    import uuid

    import psycopg

    from recsys_platform.ml import artifacts

    name = f"r_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_server_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    vectors = VectorStore(pg_server_dsn.replace("/postgres?", f"/{name}?"))
    _, manifest, emb = artifacts.load_embeddings(catalog["store"], catalog["version"])
    vectors.load_version(catalog["version"], emb["item"], emb["user"], manifest["dim"])
    vectors.activate(catalog["version"])
    frame = catalog["frame"]
    items = items_from_products(frame.drop_duplicates("productCode").to_dict("records"))
    items = [ItemAttributes(i.id, 0 if n % 3 == 0 else i.in_stock, i.product_line, i.product_scale, i.price)
             for n, i in enumerate(sorted(items, key=lambda i: i.id))]
    purchases = set(zip(frame["customerNumber"], frame["productCode"]))
    load_catalog(vectors, items, purchases)
    service = InferenceService(ModelCache(catalog["store"], vectors), vectors, k=K)
    yield {"vectors": vectors, "service": service, "items": {i.id: i for i in items}, "purchases": purchases,
           "users": emb["user"], "customers": catalog["customers"], "version": catalog["version"]}
    vectors.close()


def _passing(shop, rules: Rules, customer: int | None, products=frozenset()) -> set[str]:
    bought = {p for c, p in shop["purchases"] if c == customer} if rules.exclude_bought and customer else set()
    return {i for i, a in shop["items"].items() if rules.admits(a.in_stock, a.product_line, a.price)
            and i not in products and i not in bought}


def test_the_default_never_recommends_what_is_out_of_stock(shop):
    out = {i for i, a in shop["items"].items() if a.in_stock <= 0}
    assert len(out) > 30
    queries = [SessionQuery(None, int(c), None, frozenset()) for c in shop["customers"][:60]]
    found = shop["vectors"].recommend_batch(queries, k=K, version=shop["version"])
    assert all(len(f.recommended) == K and not f.short for f in found)
    assert not {n.id for f in found for n in f.recommended} & out
    unfiltered = shop["vectors"].items_for_users(shop["users"][1][:60], k=K, version=shop["version"])
    assert {n.id for f in unfiltered for n in f} & out, "without the rules these customers would get them"


_lines = sorted({"Classic Cars", "Motorcycles", "Planes", "Ships", "Trains", "Trucks and Buses", "Vintage Cars"})
_rules = st.builds(
    lambda in_stock, bought, only, never, low, span: Rules.from_json({
        "in_stock_only": in_stock, "exclude_bought": bought, "product_lines": only, "exclude_product_lines": never,
        "min_price": low, "max_price": None if span is None else (low or 0) + span}),
    st.booleans(), st.booleans(), st.lists(st.sampled_from(_lines), max_size=3, unique=True),
    st.lists(st.sampled_from(_lines), max_size=2, unique=True),
    st.one_of(st.none(), st.floats(20, 200)), st.one_of(st.none(), st.floats(0, 150)))


# A catalog of 110 items is always searched exactly (it passes fewer items than EXACT_MAX_PASSING);
# "index" forces the HNSW path with iterative scans, and its exact fallback, on the same catalog.
SEARCHES = {"exact": store_module.EXACT_MAX_PASSING, "index": -1}


@pytest.mark.parametrize("search", SEARCHES)
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rules=_rules, who=st.integers(0, 121), k=st.integers(1, 12), cart=st.integers(0, 3))
def test_any_rules_k_items_when_k_pass_never_a_forbidden_one(shop, monkeypatch, search, rules, who, k, cart):
    monkeypatch.setattr(store_module, "EXACT_MAX_PASSING", SEARCHES[search])
    customer = int(shop["customers"][who])
    products = frozenset(sorted(shop["items"])[who % 97:who % 97 + cart])
    anchor = sorted(products)[0] if products else None
    (found,) = shop["vectors"].recommend_batch([SessionQuery(None, customer, anchor, products, rules)], k=k,
                                               version=shop["version"])
    allowed = _passing(shop, rules, customer, products)
    for listed, name in ((found.recommended, "recommended_items"), (found.similar if anchor else None, "similar_items")):
        if listed is None:
            continue
        ids = [n.id for n in listed]
        assert set(ids) <= allowed, set(ids) - allowed
        assert len(ids) == len(set(ids)) == min(k, len(allowed - {anchor}))
        assert (name in found.short) == (len(ids) < k)
        scores = [n.score for n in listed]
        assert scores == sorted(scores, reverse=True)


def test_a_scan_cut_short_is_searched_again_exactly(shop, monkeypatch):
    """With the iterative scan bounded to a few index tuples, a selective rule leaves the scan
    short: the exact search fills the list, so k items come back whenever k pass."""
    monkeypatch.setattr(store_module, "MAX_SCAN_TUPLES", 5)
    monkeypatch.setattr(store_module, "EXACT_MAX_PASSING", -1)  # the index path, however few pass
    rules = Rules(product_lines=("Trains",))
    customers = [int(c) for c in shop["customers"][:20]]
    found = shop["vectors"].recommend_batch([SessionQuery(None, c, None, frozenset(), rules) for c in customers],
                                            k=K, version=shop["version"])
    passing = _passing(shop, rules, None)
    assert len(passing) >= K
    assert all(len(f.recommended) == K and {n.id for n in f.recommended} <= passing for f in found)


def test_the_search_is_chosen_by_how_many_items_the_rule_passes(shop, monkeypatch):
    """Few passing items: every distance computed (recall 1); many: the HNSW index. Both agree here."""
    rules = Rules(product_lines=("Trains",))
    queries = [SessionQuery(None, int(c), None, frozenset(), rules) for c in shop["customers"][:10]]
    exact = shop["vectors"].recommend_batch(queries, k=K, version=shop["version"])
    monkeypatch.setattr(store_module, "EXACT_MAX_PASSING", -1)
    indexed = shop["vectors"].recommend_batch(queries, k=K, version=shop["version"])
    assert [[n.id for n in f.recommended] for f in exact] == [[n.id for n in f.recommended] for f in indexed]


def _stream(shop, rules: Rules = Rules()) -> StreamTransformation:
    return StreamTransformation(shop["service"].recommend, k=K, rules=rules)


def _ok_event(shop, n: int, **changes) -> bytes:
    product = sorted(shop["items"])[n]
    return _payload(_event(n, customer_number=int(shop["customers"][n]), browse_history=[
        {"product_code": product, "quantity": 1, "in_shopping_cart": True}], **changes))


def test_the_stream_applies_the_defaults_and_each_events_rules(shop):
    out = {i for i, a in shop["items"].items() if a.in_stock <= 0}
    lab = [_ok_event(shop, n) for n in range(10)]  # the lab's events: no rules field
    ships = _ok_event(shop, 11, rules={"product_lines": ["Ships"], "exclude_bought": True})
    empty = _ok_event(shop, 12, rules={"min_price": 500})  # no product costs that much
    response = _stream(shop)(_request([*lab, ships, empty]))
    records = [decode_output(r) for r in response["records"]]
    assert all(r["result"] == "Ok" for r in response["records"])
    for record in records:
        listed = {i["id"] for i in record["recommended_items"]} | {i["id"] for i in record["similar_items"]["similar_items"]}
        assert not listed & out, "nothing out of stock, recommended or offered as similar"
        assert record["browse_history"][0]["product_code"] not in listed, "nothing in the cart"
    assert {shop["items"][i["id"]].product_line for i in records[10]["recommended_items"]} == {"Ships"}
    bought = {p for c, p in shop["purchases"] if c == records[10]["customer_number"]}
    assert not {i["id"] for i in records[10]["recommended_items"]} & bought
    assert records[11]["recommended_items"] == [] and "only 0 items pass the rules" in records[11]["note"]
    assert all("note" not in r for r in records[:10]), "the lab's records keep their fields"


def test_a_bad_rule_fails_its_record_with_the_reason(shop):
    response = _stream(shop)(_request([_ok_event(shop, 1), _ok_event(shop, 2, rules={"max_price": "cheap"}),
                                       _ok_event(shop, 3, rules={"product_lines": "x" * 60})]))
    assert [r["result"] for r in response["records"]] == ["Ok", "ProcessingFailed", "ProcessingFailed"]
    assert "rules.max_price must be a number" in response["records"][1]["errorMessage"]
    assert "rules.product_lines must hold printable names" in response["records"][2]["errorMessage"]


def test_the_deployments_defaults_come_from_the_settings(shop):
    """RECSYS_RULES (the Lambda's environment): here, only planes, unless an event says otherwise."""
    from recsys_platform.settings import Settings

    planes = Settings.from_env({"RECSYS_RULES": '{"product_lines": ["Planes"]}'}).rules
    response = _stream(shop, planes)(_request([_ok_event(shop, 1), _ok_event(shop, 2, rules={"product_lines": []})]))
    first, second = (decode_output(r) for r in response["records"])
    assert {shop["items"][i["id"]].product_line for i in first["recommended_items"]} == {"Planes"}
    assert len({shop["items"][i["id"]].product_line for i in second["recommended_items"]}) > 1
    with pytest.raises(Exception, match="RECSYS_RULES: rules has unknown field"):
        Settings.from_env({"RECSYS_RULES": '{"stock": true}'})


def _http(shop, method, path, body=None, **params):
    from recsys_platform.serving.handlers import ModelInference

    r = ModelInference(shop["service"])(function_url_event(method, path, body, **params))
    return r["statusCode"], json.loads(r["body"]), r.get("headers", {})


def test_the_routes_take_the_rules_as_query_parameters(shop):
    out = {i for i, a in shop["items"].items() if a.in_stock <= 0}
    vector = [float(x) for x in shop["users"][1][0]]
    status, items, _ = _http(shop, "POST", "/items_from_user", vector, limit="10")
    assert status == 200 and len(items) == 10 and not {i["id"] for i in items} & out
    status, items, _ = _http(shop, "POST", "/items_from_user", vector, limit="10", in_stock_only="false")
    assert status == 200 and {i["id"] for i in items} & out, "out-of-stock items when asked for"
    status, items, _ = _http(shop, "GET", "/items_from_item", item_id=sorted(shop["items"])[1], limit="5",
                             product_line=["Motorcycles", "Planes"], max_price="120")
    assert status == 200 and items
    assert all(shop["items"][i["id"]].product_line in ("Motorcycles", "Planes") and shop["items"][i["id"]].price <= 120
               for i in items)
    customer = int(shop["customers"][0])
    status, items, _ = _http(shop, "POST", "/items_from_user", vector, limit="20", exclude_bought="true",
                             customer=str(customer))
    assert status == 200 and not {i["id"] for i in items} & {p for c, p in shop["purchases"] if c == customer}
    status, items, headers = _http(shop, "POST", "/items_from_user", vector, limit="10", min_price="199")
    assert status == 200 and len(items) < 10
    assert headers["x-recommendations-note"].startswith(f"only {len(items)} items pass the rules")


def test_bad_rule_parameters_are_a_400_naming_the_parameter(shop):
    vector = [float(x) for x in shop["users"][1][0]]
    for params, named in [({"min_price": "-1"}, "min_price"), ({"product_line": [""]}, "product_line"),
                          ({"exclude_product_line": ["a\x01b"]}, "exclude_product_line"),
                          ({"in_stock_only": "perhaps"}, "in_stock_only"), ({"customer": "0"}, "customer")]:
        status, body, _ = _http(shop, "POST", "/items_from_user", vector, limit="5", **params)
        assert status == 400 and named in body["error"], (params, body)


def test_a_refused_catalog_load_changes_neither_table(shop):
    """One transaction for both tables: a load the database refuses, in either, leaves both as they were."""
    store = VectorStore(shop["vectors"].dsn)
    before = (read_attributes(store), read_purchases(store))
    twice = ItemAttributes("S10_0000", 1, "Ships", "1:10", 10.0)
    with pytest.raises(VectorStoreError, match="loading item_attributes failed and was rolled back: .*duplicate key"):
        load_catalog(store, [twice, twice], [(1, "S10_0000")])
    with pytest.raises(VectorStoreError, match="loading customer_purchases failed and was rolled back"):
        load_catalog(store, [twice], [(1, "P" * 100)])  # longer than the column: refused after the attributes loaded
    assert (read_attributes(store), read_purchases(store)) == before


def test_serving_without_the_catalog_names_the_asset_to_materialise(shop):
    """A vector database whose item_attributes was never loaded: a clear error, and the routes a 503."""
    import psycopg

    with psycopg.connect(shop["vectors"].dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE item_attributes RENAME TO item_attributes_aside")
        try:
            with pytest.raises(VectorStoreError, match="lacks a table: .*materialise item_attributes"):
                shop["vectors"].recommend_batch([SessionQuery(None, int(shop["customers"][0]), None, frozenset())])
            status, body, _ = _http(shop, "GET", "/items_from_item", item_id=sorted(shop["items"])[0], limit="5")
            assert status == 503 and "unavailable" in body["error"]
        finally:
            conn.execute("ALTER TABLE item_attributes_aside RENAME TO item_attributes")


def test_rules_are_checked_and_named():
    assert Rules.from_json(None) == Rules()
    for bad, message in [({"stock": True}, "unknown field"), ({"in_stock_only": "yes"}, "true or false"),
                         ({"min_price": -1}, "between 0 and"), ({"product_lines": ["a\x00b"]}, "printable"),
                         ({"exclude_product_lines": 3}, "a list of product lines"), ([], "must be an object")]:
        with pytest.raises(RuleError, match=message):
            Rules.from_json(bad)


def test_the_catalog_is_swapped_in_whole(shop):
    """A reload replaces every row at once (a reader sees the old table or the new one)."""
    store = VectorStore(shop["vectors"].dsn)
    before = read_attributes(store)
    load_catalog(store, [ItemAttributes("S10_0000", 1, "Ships", "1:10", 10.0)], [(1, "S10_0000")])
    assert set(read_attributes(store)) == {"S10_0000"}
    load_catalog(store, list(before.values()), shop["purchases"])
    assert read_attributes(store) == before
    np.testing.assert_equal(len(before), len(shop["items"]))


def test_events_without_a_rules_field_stay_valid():
    from recsys_platform.streaming.events import decode_record

    lab = {"session_id": "a1", "customer_number": 103, "city": "Nantes", "country": "France", "credit_limit": 21000,
           "browse_history": [{"product_code": "S10_1678", "quantity": 2, "in_shopping_cart": True}]}
    _, event = decode_record(base64.b64encode(json.dumps(lab).encode()).decode())
    assert event.rules == {}
