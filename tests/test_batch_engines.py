"""The two batch engines against each other and against random requests, on SQLite and MariaDB.

- Both engines (and both of the Spark engine's extraction paths) write byte-identical files,
  in both layouts, because they share the contract's finishing step and writer.
- The set of partitions written equals the set asked for, for random key sets of any size and
  offset (hypothesis), in both layouts; this is what the old `str.replace` inlining of bind
  parameters broke (`:b1` also rewrote `:b10`..`:b19`).
"""

from __future__ import annotations

import hashlib
import tempfile
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsys_platform.batch.contract import CUSTOMER_KEY, DATASET, Layout, Selection
from recsys_platform.batch.engines import arrow
from recsys_platform.batch.engines import spark as spark_engine
from recsys_platform.batch.seed import seed
from recsys_platform.batch.source import SourceDatabase, customer_filter
from recsys_platform.errors import DataQualityError
from recsys_platform.storage import lake
from recsys_platform.storage.object_store import ObjectStore


def _quiet(*_):
    pass


def _digests(store: ObjectStore) -> dict[str, str]:
    return {o.key: hashlib.sha256(store.read_bytes(o.key)).hexdigest() for o in store.list(DATASET)}


def _fresh_store() -> ObjectStore:
    return ObjectStore.from_url(Path(tempfile.mkdtemp(prefix="lake-")).as_uri())


@pytest.fixture(scope="module")
def mariadb_source(mysql_server_url):
    """A scale-1 source on the MariaDB server for this module (seeded once, dropped after)."""
    server = sa.engine.make_url(mysql_server_url)
    name = f"t_engines_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(server.set(database=""))
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    url = server.set(database=name).render_as_string(hide_password=False)
    seed(sa.create_engine(url))
    yield url
    with admin.begin() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
    admin.dispose()


@pytest.fixture(scope="module")
def sqlite_source(tmp_path_factory):
    path = tmp_path_factory.mktemp("engines") / "classicmodels.db"
    seed(sa.create_engine(f"sqlite:///{path}"))
    return f"sqlite:///{path}"


@pytest.mark.parametrize("buckets", [0, 8])
def test_both_engines_write_identical_bytes_from_sqlite(spark, sqlite_source, buckets):
    db = SourceDatabase(sqlite_source)
    layout = Layout(buckets)
    keys = layout.partition_keys(db.customer_numbers())
    via_arrow, via_spark = _fresh_store(), _fresh_store()
    a = arrow.build(db, via_arrow, keys, layout=layout, log=_quiet)
    s = spark_engine.build(spark, db, via_spark, keys, layout=layout, log=_quiet)
    assert a.rows == s.rows == db.count_ratings()
    assert a.extraction == "connectorx-arrow"
    assert len(_digests(via_arrow)) == len(keys)
    assert _digests(via_arrow) == _digests(via_spark)


@pytest.mark.mariadb
@pytest.mark.parametrize("buckets", [0, 8])
def test_both_engines_and_both_spark_paths_write_identical_bytes_from_mariadb(spark, jdbc_jar, mariadb_source, buckets):
    db = SourceDatabase(mariadb_source)
    layout = Layout(buckets)
    keys = layout.partition_keys(db.customer_numbers())
    stores = {name: _fresh_store() for name in ("arrow", "spark_jdbc", "spark_sqlalchemy")}
    arrow.build(db, stores["arrow"], keys, layout=layout, log=_quiet)
    spark_engine.build(spark, db, stores["spark_jdbc"], keys, layout=layout, use_jdbc=True, num_partitions=3, log=_quiet)
    spark_engine.build(spark, db, stores["spark_sqlalchemy"], keys, layout=layout, use_jdbc=False, log=_quiet)
    digests = {name: _digests(store) for name, store in stores.items()}
    assert len(digests["arrow"]) == len(keys)
    assert digests["arrow"] == digests["spark_jdbc"] == digests["spark_sqlalchemy"]


def test_bucket_filters_name_exactly_the_requested_buckets():
    """The old inlining replaced `:b1` inside `:b10`.. too: buckets 5..20 of 32 became 5..14, 60..65."""
    selection = Selection.of_buckets(32, range(5, 21))
    clause, params = customer_filter(selection)
    assert sorted(params.values()) == list(range(5, 21))
    inline, none = customer_filter(selection, inline=True)
    assert none == {} and inline.endswith(f"IN ({', '.join(str(k) for k in range(5, 21))})")
    with pytest.raises(ValueError, match="bucket keys must be in 0..31"):
        Selection.of_buckets(32, [31, 32])
    with pytest.raises(ValueError, match="not a whole number"):
        Selection.of_customers([103, 1.5])


@pytest.mark.mariadb
def test_jdbc_with_eleven_or_more_buckets_writes_exactly_those(spark, jdbc_jar, mariadb_source):
    db = SourceDatabase(mariadb_source)
    layout = Layout(32)
    keys = [str(k) for k in range(5, 21)]
    store = _fresh_store()
    result = spark_engine.build(spark, db, store, keys, layout=layout, use_jdbc=True, log=_quiet)
    assert sorted(lake.list_partition_keys(store, DATASET, layout.column), key=int) == keys
    assert result.rows == db.count_ratings(Selection.of_buckets(32, range(5, 21)))


def _expected(db: SourceDatabase, layout: Layout, keys: list[str]) -> set[str]:
    """The requested partitions that have rows in the source."""
    present = {layout.partition_of(c) for c in db.customer_numbers()}
    return set(keys) & present


def _requests(draw, customers: list[int]):
    buckets = draw(st.sampled_from([0, 2, 11, 32, 64]))
    if buckets:
        start = draw(st.integers(0, buckets - 1))
        keys = draw(st.lists(st.integers(start, buckets - 1), min_size=1, max_size=200, unique=True))
    else:
        known = draw(st.lists(st.sampled_from(customers), min_size=1, max_size=200, unique=True))
        absent = draw(st.lists(st.integers(1, 10_000_000), max_size=5, unique=True))
        keys = sorted(set(known) | set(absent))
    return Layout(buckets), [str(k) for k in keys]


@st.composite
def requests_for(draw, customers):
    return _requests(draw, customers)


def _check_written_equals_asked(build, db: SourceDatabase, layout: Layout, keys: list[str]) -> None:
    store = _fresh_store()
    result = build(db, store, keys, layout)
    expected = _expected(db, layout, keys)
    assert set(lake.list_partition_keys(store, DATASET, layout.column)) == expected
    assert {k for k, s in result.partitions.items() if s == "written"} == expected
    assert {k for k, s in result.partitions.items() if s == "removed"} == set(keys) - expected
    written = lake.read_partitions(store, DATASET, layout.column)
    customers = written[CUSTOMER_KEY].to_pylist() if written.num_rows else []
    assert {layout.partition_of(c) for c in customers} == expected, "no row outside the request"
    assert result.rows == db.count_ratings(layout.selection(keys))



@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_arrow_engine_writes_exactly_the_partitions_asked_for(sqlite_source, data):
    db = SourceDatabase(sqlite_source)
    layout, keys = data.draw(requests_for(db.customer_numbers()))
    _check_written_equals_asked(lambda d, s, k, lay: arrow.build(d, s, k, layout=lay, log=_quiet), db, layout, keys)


@pytest.mark.mariadb
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_spark_jdbc_and_arrow_write_exactly_the_partitions_asked_for_on_mariadb(spark, jdbc_jar, mariadb_source, data):
    db = SourceDatabase(mariadb_source)
    layout, keys = data.draw(requests_for(db.customer_numbers()))
    _check_written_equals_asked(lambda d, s, k, lay: spark_engine.build(
        spark, d, s, k, layout=lay, use_jdbc=True, log=_quiet), db, layout, keys)
    _check_written_equals_asked(lambda d, s, k, lay: arrow.build(d, s, k, layout=lay, log=_quiet), db, layout, keys)


def test_text_in_a_numeric_sqlite_column_is_refused_by_the_arrow_engine(tmp_path):
    """SQLite keeps any value in any column; SQL's CAST would silently turn 'abc' into 0."""
    path = tmp_path / "classicmodels.db"
    url = f"sqlite:///{path}"
    seed(sa.create_engine(url))
    with sa.create_engine(url).begin() as conn:
        conn.execute(sa.text("UPDATE customers SET creditLimit = 'lots' WHERE customerNumber = (SELECT MIN(customerNumber) FROM customers)"))
    db = SourceDatabase(url)
    store = _fresh_store()
    with pytest.raises(DataQualityError, match=r"types: 1 row\(s\) of customers\.creditLimit, e\.g\. creditLimit='lots'"):
        arrow.build(db, store, [str(c) for c in db.customer_numbers()], log=_quiet)
    assert not store.list(DATASET), "nothing written"
