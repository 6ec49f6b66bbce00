"""pgvector store on the real embedded PostgreSQL: loads, atomic switches, queries, faults."""

import threading
import time

import numpy as np
import psycopg
import pytest

from recsys_platform.vectors.store import VectorStore, VectorStoreError


def _data(n_items=300, n_users=100, dim=32, seed=0):
    rng = np.random.default_rng(seed)
    items = ([f"S{i:05d}" for i in range(n_items)], rng.normal(size=(n_items, dim)).astype(np.float32))
    users = (list(range(1, n_users + 1)), rng.normal(size=(n_users, dim)).astype(np.float32))
    return items, users


@pytest.fixture
def store(pg_dsn):
    return VectorStore(pg_dsn)


def test_load_activate_and_query_match_exact_search(store):
    items, users = _data()
    store.load_version("v1", items, users, 32)
    store.activate("v1")
    assert store.active_version() == "v1"
    assert store.counts() == {"item": 300, "user": 100}
    assert store.dimensions() == {"item": 32, "user": 32}
    found = store.items_for_users(users[1][:20], k=10, ef_search=200)
    exact = np.argsort(-(users[1][:20] @ items[1].T), axis=1)[:, :10]
    recall = np.mean([len({n.id for n in f} & {items[0][j] for j in e}) / 10 for f, e in zip(found, exact)])
    assert recall >= 0.95
    assert [n.score for n in found[0]] == sorted((n.score for n in found[0]), reverse=True)


def test_exclusions_and_self_are_left_out(store):
    items, users = _data()
    store.load_version("v1", items, users, 32)
    store.activate("v1")
    top = store.items_for_users(users[1][:1], k=5)[0]
    excluded = {top[0].id, top[1].id}
    again = store.items_for_users(users[1][:1], k=5, exclude=[excluded])[0]
    assert len(again) == 5 and not excluded & {n.id for n in again}
    similar = store.similar_items([items[0][0], items[0][1]], k=4)
    assert [len(s) for s in similar] == [4, 4]
    assert items[0][0] not in {n.id for n in similar[0]}
    checked, strangers = store.nearest_item_to_itself()
    assert (checked, strangers) == (300, [])


def test_readers_never_see_an_empty_or_partial_table_during_a_switch(store):
    items1, users1 = _data(n_items=2000, seed=1)
    items2, users2 = _data(n_items=3000, seed=2)
    store.load_version("v1", items1, users1, 32)
    store.activate("v1")
    seen, errors, stop = [], [], threading.Event()

    def reader():
        while not stop.is_set():
            try:
                seen.append(store.counts()["item"])
                assert len(store.items_for_users(users1[1][:1], k=10)[0]) == 10
            except Exception as e:  # noqa: BLE001 - every failure is a finding
                errors.append(repr(e))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        time.sleep(0.2)
        store.load_version("v2", items2, users2, 32)
        store.activate("v2")
        time.sleep(0.2)
    finally:
        stop.set()
        thread.join()
    assert not errors
    assert set(seen) == {2000, 3000}, "only whole versions are ever visible"
    assert seen.index(3000) > 0 and seen[-1] == 3000


def test_the_active_version_is_never_reloaded_and_unknown_versions_never_activated(store):
    items, users = _data()
    store.load_version("v1", items, users, 32)
    store.activate("v1")
    with pytest.raises(VectorStoreError, match="is active and serving"):
        store.load_version("v1", items, users, 32)
    with pytest.raises(VectorStoreError, match="'v9' is not loaded"):
        store.activate("v9")
    with pytest.raises(VectorStoreError, match="unsafe model version name"):
        store.load_version("v1; drop table x", items, users, 32)


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda v: v[:, :16], r"shape \(300, 16\), expected \(300, 32\)"),
    (lambda v: np.where(np.arange(v.size).reshape(v.shape) == 5, np.nan, v), "NaN or infinity"),
])
def test_bad_vectors_stop_the_load_and_the_previous_version_keeps_serving(store, mutate, message):
    items, users = _data()
    store.load_version("v1", items, users, 32)
    store.activate("v1")
    with pytest.raises(VectorStoreError, match=message):
        store.load_version("v2", (items[0], mutate(items[1])), users, 32)
    assert store.active_version() == "v1"
    assert store.counts() == {"item": 300, "user": 100}


def test_duplicate_ids_stop_the_load(store):
    items, users = _data()
    store.load_version("v1", items, users, 32)
    store.activate("v1")
    dup = (items[0][:-1] + [items[0][0]], items[1])
    with pytest.raises(psycopg.errors.UniqueViolation):
        store.load_version("v2", dup, users, 32)
    assert store.active_version() == "v1" and store.counts()["item"] == 300


def test_database_killed_mid_load_leaves_the_previous_version_serving(store):
    items, users = _data()
    store.load_version("v1", items, users, 32)
    store.activate("v1")
    big_items, big_users = _data(n_items=60_000, n_users=10, seed=3)
    failure = []

    def load():
        try:
            store.load_version("v2", big_items, big_users, 32)
        except Exception as e:  # noqa: BLE001
            failure.append(e)

    thread = threading.Thread(target=load)
    thread.start()
    with psycopg.connect(store.dsn, autocommit=True) as admin:
        deadline = time.monotonic() + 30
        killed = 0
        while not killed and time.monotonic() < deadline:
            killed = admin.execute("""SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                WHERE pid <> pg_backend_pid() AND datname = current_database()
                AND (query ILIKE 'COPY%' OR query ILIKE 'CREATE INDEX%')""").fetchone()[0]
    thread.join()
    assert killed and failure, "the load was interrupted"
    assert store.active_version() == "v1"
    assert store.counts() == {"item": 300, "user": 100}
    store.load_version("v2", big_items, big_users, 32)  # a retry after the fault succeeds
    store.activate("v2")
    assert store.counts()["item"] == 60_000


def test_retention_drops_old_versions_but_never_the_active_one(store):
    for i in range(1, 5):
        items, users = _data(seed=i)
        store.load_version(f"v{i}", items, users, 32)
    store.activate("v1")
    assert store.retain(keep=2) == ["v2"]
    with psycopg.connect(store.dsn) as conn:
        tables = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE '%emb__v%'")}
    assert tables == {f"{k}_emb__v{i}" for k in ("item", "user") for i in (1, 3, 4)}


def test_unreachable_database_is_a_clear_error():
    with pytest.raises(VectorStoreError, match="cannot connect to the vector database"):
        VectorStore("postgresql://nobody@127.0.0.1:1/x", connect_timeout=2).counts()
