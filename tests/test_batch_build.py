"""`ratings_ml_training` built end to end by each batch engine (Arrow, Spark) on real sources."""

import hashlib
import os
import shutil

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from recsys_platform.batch.contract import COLUMN_NAMES, DATASET, Layout, Selection
from recsys_platform.batch.engines import arrow
from recsys_platform.batch.engines import spark as spark_engine
from recsys_platform.batch.seed import seed
from recsys_platform.batch.source import SourceDatabase
from recsys_platform.errors import DataQualityError
from recsys_platform.storage import lake
from recsys_platform.storage.object_store import ObjectStore


def _exec(url, *statements):
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        for s in statements:
            conn.execute(sa.text(s))
    engine.dispose()


def _snapshot(store: ObjectStore) -> dict[str, str]:
    return {o.key: hashlib.sha1(store.read_bytes(o.key)).hexdigest() for o in store.list(DATASET)}


def _source_rows(db: SourceDatabase) -> set[tuple]:
    with db.connect() as conn:
        return {tuple(r) for r in conn.execute(sa.text("SELECT customerNumber, productCode, productRating FROM ratings"))}


def _lake_rows(store, column="customerNumber") -> set[tuple]:
    t = lake.read_partitions(store, DATASET, column)
    return set(zip(t["customerNumber"].to_pylist(), t["productCode"].to_pylist(), t["productRating"].to_pylist()))


def _quiet(*_):
    pass


@pytest.fixture(params=["arrow", "spark"])
def build(request, spark):
    """Each engine, called the same way: build(db, store, keys, layout=...)."""
    if request.param == "arrow":
        return lambda db, store, keys, **kw: arrow.build(db, store, keys, log=_quiet, **kw)
    return lambda db, store, keys, **kw: spark_engine.build(spark, db, store, keys, log=_quiet, **kw)


@pytest.fixture
def store(tmp_path):
    return ObjectStore.from_url((tmp_path / "lake").as_uri())


def test_one_folder_per_customer_with_exactly_the_sources_rows(build, settings, store):
    db = SourceDatabase(settings.source_url)
    keys = [str(c) for c in db.customer_numbers()]
    result = build(db, store, keys)
    assert result.written == len(keys) == 122
    assert lake.list_partition_keys(store, DATASET, "customerNumber") == sorted(keys)
    for key in keys[:5]:
        assert [o.key for o in store.list(f"{DATASET}/customerNumber={key}")] == [
            f"{DATASET}/customerNumber={key}/{lake.PART_FILE}"]
    assert _lake_rows(store) == _source_rows(db)
    table = lake.read_partitions(store, DATASET, "customerNumber", keys[:1])
    assert sorted(table.column_names) == sorted(COLUMN_NAMES)
    file_schema = pq.read_schema(store.path(f"{DATASET}/customerNumber={keys[0]}/{lake.PART_FILE}"))
    assert "customerNumber" not in file_schema.names, "the partition key lives in the folder name"
    assert pq.ParquetFile(store.path(f"{DATASET}/customerNumber={keys[0]}/{lake.PART_FILE}")).metadata.row_group(0).column(0).compression == "SNAPPY"


def test_rerun_is_idempotent_and_touches_only_its_partitions(build, settings, store):
    db = SourceDatabase(settings.source_url)
    keys = [str(c) for c in db.customer_numbers()]
    build(db, store, keys)
    first = _snapshot(store)
    rows = _lake_rows(store)
    # Change one customer, rebuild two partitions: only that customer's file changes.
    _exec(settings.source_url, f"UPDATE ratings SET productRating = 6 - productRating WHERE customerNumber = {keys[0]}")
    build(db, store, keys[:2])
    second = _snapshot(store)
    changed = {k for k in first if first[k] != second.get(k)}
    assert changed == {f"{DATASET}/customerNumber={keys[0]}/{lake.PART_FILE}"}
    assert len(_lake_rows(store)) == len(rows)
    build(db, store, keys[:2])
    assert _snapshot(store) == second, "same source, same bytes"


def test_a_customer_without_ratings_loses_its_partition(build, settings, store):
    db = SourceDatabase(settings.source_url)
    keys = [str(c) for c in db.customer_numbers()]
    build(db, store, keys[:3])
    _exec(settings.source_url, f"DELETE FROM ratings WHERE customerNumber = {keys[1]}")
    result = build(db, store, keys[:3])
    assert result.partitions[keys[1]] == "removed"
    assert lake.list_partition_keys(store, DATASET, "customerNumber") == sorted(keys[:3:2])


@pytest.mark.parametrize(("statements", "message"), [
    (["UPDATE ratings SET productRating = 7 WHERE rowid = 5"], r"rating_range: 1 row\(s\) of ratings\.productRating, e\.g\. .*productRating=7"),
    (["CREATE TABLE r2 AS SELECT * FROM ratings", "DROP TABLE ratings", "ALTER TABLE r2 RENAME TO ratings",
      "INSERT INTO ratings SELECT * FROM ratings WHERE rowid = 1"], r"unique_ratings: 1 row\(s\) of ratings\.customerNumber, productCode"),
    (["PRAGMA foreign_keys = OFF", "UPDATE ratings SET productCode = 'S99_9999' WHERE rowid = 2"],
     r"referential_integrity: 1 row\(s\) of ratings\.productCode, e\.g\. .*S99_9999"),
    (["DELETE FROM ratings"], None),
])
def test_a_bad_source_writes_nothing(build, settings, store, statements, message):
    db = SourceDatabase(settings.source_url)
    keys = [str(c) for c in db.customer_numbers()]
    build(db, store, keys)
    before = _snapshot(store)
    _exec(settings.source_url, *statements)
    if message is None:  # an empty ratings table is not an error: every partition is emptied
        result = build(db, store, keys)
        assert result.rows == 0 and result.removed == len(keys)
        return
    with pytest.raises(DataQualityError, match=message) as err:
        build(db, store, keys)
    assert "nothing was written" in str(err.value)
    assert err.value.violations
    assert _snapshot(store) == before


def test_a_crash_mid_write_leaves_every_partition_old_or_new(build, settings, tmp_path):
    db = SourceDatabase(settings.source_url)
    keys = [str(c) for c in db.customer_numbers()][:20]
    store = ObjectStore.from_url((tmp_path / "lake").as_uri())
    build(db, store, keys)
    old = _lake_rows(store)
    _exec(settings.source_url, "UPDATE ratings SET productRating = 6 - productRating")
    # A real fault: one partition's target path becomes a folder, so its write fails mid-job.
    broken = keys[7]
    target = store.path(lake.partition_file(DATASET, "customerNumber", broken))
    os.remove(target)
    os.makedirs(os.path.join(target, "blocker"))
    with pytest.raises(Exception, match="Is a directory|IsADirectoryError"):
        build(db, store, keys)
    new = _source_rows(db)
    for key in keys:  # each partition is a whole file, entirely old or entirely new
        if key == broken:
            continue
        rows = _lake_rows_for(store, key)
        assert rows in ({r for r in old if str(r[0]) == key}, {r for r in new if str(r[0]) == key})
    assert not [o for o in store.list(DATASET) if ".tmp-" in o.key], "no temporary file left visible"
    shutil.rmtree(target)
    build(db, store, keys)  # the rerun completes the job
    assert _lake_rows(store) == {r for r in new if str(r[0]) in keys}


def _lake_rows_for(store, key):
    t = lake.read_partitions(store, DATASET, "customerNumber", [key])
    return set(zip(t["customerNumber"].to_pylist(), t["productCode"].to_pylist(), t["productRating"].to_pylist()))


def test_hash_bucket_layout_keeps_customer_in_the_file(build, settings, store):
    db = SourceDatabase(settings.source_url)
    layout = Layout(buckets=8)
    keys = layout.partition_keys(db.customer_numbers())
    result = build(db, store, keys, layout=layout)
    assert lake.list_partition_keys(store, DATASET, "customer_bucket") == sorted(keys)
    assert result.rows == db.count_ratings()
    t = lake.read_partitions(store, DATASET, "customer_bucket", ["3"])
    assert t.num_rows and {c % 8 for c in t["customerNumber"].to_pylist()} == {3}
    assert _lake_rows(store, "customer_bucket") == _source_rows(db)


@pytest.mark.mariadb
def test_jdbc_and_sqlalchemy_extraction_give_the_same_training_data(spark, jdbc_jar, mysql_url, tmp_path):
    seed(sa.create_engine(mysql_url))
    db = SourceDatabase(mysql_url)
    keys = [str(c) for c in db.customer_numbers()]
    via_jdbc = ObjectStore.from_url((tmp_path / "jdbc").as_uri())
    via_arrow = ObjectStore.from_url((tmp_path / "arrow").as_uri())
    r1 = spark_engine.build(spark, db, via_jdbc, keys, use_jdbc=True, num_partitions=3)
    r2 = spark_engine.build(spark, db, via_arrow, keys, use_jdbc=False)
    assert (r1.extraction, r2.extraction) == ("spark-jdbc", "sqlalchemy-arrow")
    assert r1.rows == r2.rows == db.count_ratings()
    a = lake.read_partitions(via_jdbc, DATASET, "customerNumber").sort_by([("customerNumber", "ascending"), ("productCode", "ascending")])
    b = lake.read_partitions(via_arrow, DATASET, "customerNumber").sort_by([("customerNumber", "ascending"), ("productCode", "ascending")])
    assert a.schema == b.schema
    assert a.select(COLUMN_NAMES).equals(b.select(COLUMN_NAMES))


@pytest.mark.mariadb
def test_jdbc_extraction_of_a_subset_of_customers(spark, jdbc_jar, mysql_url, tmp_path):
    seed(sa.create_engine(mysql_url))
    db = SourceDatabase(mysql_url)
    keys = [str(c) for c in db.customer_numbers()][5:9]
    store = ObjectStore.from_url((tmp_path / "lake").as_uri())
    result = spark_engine.build(spark, db, store, keys, use_jdbc=True)
    assert result.rows == db.count_ratings(Selection.of_customers([int(k) for k in keys]))
    assert lake.list_partition_keys(store, DATASET, "customerNumber") == sorted(keys)


@pytest.mark.s3
def test_s3_lake_through_an_s3_compatible_endpoint(build, settings, s3_bucket, s3_endpoint):
    import boto3

    db = SourceDatabase(settings.source_url)
    keys = [str(c) for c in db.customer_numbers()]
    store = ObjectStore.from_url(f"s3://{s3_bucket}/lake", endpoint_url=s3_endpoint)
    result = build(db, store, keys)
    assert result.written == len(keys)
    objects = boto3.client("s3", endpoint_url=s3_endpoint).list_objects_v2(
        Bucket=s3_bucket, Prefix=f"lake/{DATASET}/customerNumber={keys[0]}/")["Contents"]
    assert [o["Key"] for o in objects] == [f"lake/{DATASET}/customerNumber={keys[0]}/{lake.PART_FILE}"]
    assert _lake_rows(store) == _source_rows(db)
    before = _snapshot(store)
    build(db, store, keys)
    assert _snapshot(store) == before


@pytest.mark.mariadb
def test_jdbc_extraction_with_hash_buckets(spark, jdbc_jar, mysql_url, tmp_path):
    seed(sa.create_engine(mysql_url))
    db = SourceDatabase(mysql_url)
    layout = Layout(buckets=5)
    store = ObjectStore.from_url((tmp_path / "lake").as_uri())
    result = spark_engine.build(spark, db, store, ["1", "4"], layout=layout, use_jdbc=True)
    assert result.rows == db.count_ratings(Selection.of_buckets(5, [1, 4]))
    assert lake.list_partition_keys(store, DATASET, "customer_bucket") == ["1", "4"]
