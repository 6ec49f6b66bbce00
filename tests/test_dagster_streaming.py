"""The streaming side through Dagster: the sensor requests the right hour, the asset compacts it."""

import datetime as dt
import json
import os

import dagster as dg
import pyarrow.parquet as pq
import pytest

from recsys_platform.batch.seed import generate
from recsys_platform.definitions import build_definitions
from recsys_platform.storage.object_store import ObjectStore
from recsys_platform.streaming.delivery import BufferHints, DeliveryRuntime
from recsys_platform.streaming.producer import sessions
from recsys_platform.streaming.stream import LocalStream


def _deliver(settings, transform, count, malformed, seed):
    data = generate(1)
    customers = [{k: c[k] for k in ("customerNumber", "city", "country", "creditLimit")} for c in data["customers"]]
    products = sorted(p["productCode"] for p in data["products"])
    stream = LocalStream(f"{settings.home}/stream", "activity")
    stream.put_records([(k, d) for k, d, _ in sessions(customers, products, count, malformed, seed=seed)])
    store = ObjectStore.from_url(settings.recommendations_url)
    runtime = DeliveryRuntime(stream, transform, store, f"{settings.home}/delivery",
                              hints=BufferHints(records=100), log=lambda *_: None)
    return runtime.run(once=True)


def _hours(settings) -> list[str]:
    """Hourly partition keys of the objects in the bucket (robust to a test crossing an hour)."""
    keys = [o.key.removeprefix("processing-failed/") for o in ObjectStore.from_url(settings.recommendations_url).list()]
    return sorted({"{}-{}-{}-{}:00".format(*k.split("/")[:4]) for k in keys})


def _tick(defs, instance, cursor=None):
    sensor = defs.resolve_sensor_def("recommendations_sensor")
    with dg.build_sensor_context(instance=instance, definitions=defs, cursor=cursor,
                                 resources={"recommendations_store": defs.resources["recommendations_store"]}) as ctx:
        return sensor.evaluate_tick(ctx)


def test_sensor_requests_the_hour_once_and_the_asset_compacts_it(catalog, settings, tmp_path):
    settings = settings.with_(artifacts_url=catalog["store"].url)
    defs = build_definitions(settings, keep_spark=True)
    counters = _deliver(settings, catalog["transform"], 250, 0.1, seed=3)
    with dg.instance_for_test() as instance:
        first = _tick(defs, instance)
        assert [r.partition_key for r in first.run_requests] == _hours(settings)
        request = first.run_requests[-1]
        hour = request.partition_key
        assert request.run_key.startswith(f"{hour}:")
        assert isinstance(_tick(defs, instance, first.cursor).skip_message, str), "nothing new: no request"

        run = defs.resolve_job_def("recommendations_job").execute_in_process(
            instance=instance, partition_key=request.partition_key)
        checks = {e.check_name: e for e in run.get_asset_check_evaluations()}
        assert all(c.passed for c in checks.values()), {n: c.description for n, c in checks.items()}
        meta = run.asset_materializations_for_node("recommendations")[0].metadata
        if len(first.run_requests) == 1:  # (a delivery that straddled an hour splits the counts)
            assert meta["dagster/row_count"].value == counters.delivered
            assert meta["failed"].value == counters.failed
            assert meta["events"].value == counters.records_in == 250
        lake = ObjectStore.from_url(settings.lake_url)
        path = lake.path(f"recommendations/hour={hour[:13]}/part-00000.snappy.parquet")
        assert 0 < meta["catalog_coverage"].value <= 1
        table = pq.read_table(path)
        assert table.num_rows == meta["dagster/row_count"].value
        assert {"recommended_items", "similar_items", "model_version", "processed_at"} <= set(table.column_names)
        ids = table.column("recommendation_id").to_pylist()
        assert None not in ids and len(set(ids)) == len(ids), "each delivered answer's own id, in the lake"
        preview = meta["preview"].value.records  # a table a person reads: what was recommended to whom
        assert preview and all(r.data["recommended_items"].count(", ") == 4 for r in preview)
        assert set(preview[0].data["recommended_items"].split(", ")) <= set(catalog["products"])

        _deliver(settings, catalog["transform"], 20, 0.0, seed=4)  # new objects in the same hour: a new request
        again = _tick(defs, instance, first.cursor)
        assert [r.partition_key for r in again.run_requests] == [_hours(settings)[-1]]
        assert again.run_requests[0].run_key not in {r.run_key for r in first.run_requests}


def test_a_high_failure_rate_and_unknown_ids_fail_the_checks(catalog, settings):
    settings = settings.with_(artifacts_url=catalog["store"].url)
    defs = build_definitions(settings, keep_spark=True)
    _deliver(settings, catalog["transform"], 100, 0.6, seed=5)
    store = ObjectStore.from_url(settings.recommendations_url)
    key = next(o.key for o in store.list() if not o.key.startswith("processing-failed/"))
    lines = store.read_bytes(key).decode().splitlines()
    forged = json.loads(lines[0])
    forged["recommended_items"][0]["id"] = "S00_FAKE"
    store.write_bytes(key, ("\n".join([json.dumps(forged), *lines[1:]]) + "\n").encode())
    with dg.instance_for_test() as instance:
        hour = "{}-{}-{}-{}:00".format(*key.split("/")[:4])
        run = defs.resolve_job_def("recommendations_job").execute_in_process(
            instance=instance, partition_key=hour, raise_on_error=False)
        checks = {e.check_name: e for e in run.get_asset_check_evaluations()}
        assert not checks["failure_rate_under_threshold"].passed
        assert not checks["recommended_ids_exist_in_the_catalog"].passed
        assert "S00_FAKE" in checks["recommended_ids_exist_in_the_catalog"].description


def test_hourly_partitions_start_at_the_configured_hour_whatever_the_bucket_holds(catalog, settings):
    """RECSYS_STREAM_START (a fixed default) is the first hour: loading never lists the bucket."""
    from recsys_platform.errors import ConfigError
    from recsys_platform.settings import Settings

    def first_hour(s: Settings) -> dt.datetime:
        return build_definitions(s, keep_spark=True).resolve_assets_def("recommendations").partitions_def.start

    assert first_hour(settings) == dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    _deliver(settings, catalog["transform"], 10, 0.0, seed=6)  # objects in the bucket change nothing
    assert first_hour(settings) == dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    later = Settings.build(home=settings.home, stream_start="2026-03-01-05")
    assert first_hour(later) == dt.datetime(2026, 3, 1, 5, tzinfo=dt.timezone.utc)
    with pytest.raises(ConfigError, match="RECSYS_STREAM_START must be YYYY-MM-DD or YYYY-MM-DD-HH"):
        Settings.build(home=settings.home, stream_start="March")

def _delivered_hour(settings) -> tuple[ObjectStore, str, str]:
    """The bucket, the first delivered object, and its hour's folder."""
    store = ObjectStore.from_url(settings.recommendations_url)
    key = next(o.key for o in store.list() if not o.key.startswith("processing-failed/"))
    return store, key, key.rsplit("/", 1)[0]


def test_bad_objects_and_lines_are_isolated_named_and_kept(catalog, settings):
    """A truncated object, a binary one, an off-contract record, a writer's temporary and a nested
    key beside good objects: the hour succeeds with every good record, and each bad line is
    counted, named and kept; the ignored keys are named; a clean rerun removes the rejects."""
    settings = settings.with_(artifacts_url=catalog["store"].url)
    defs = build_definitions(settings, keep_spark=True)
    counters = _deliver(settings, catalog["transform"], 80, 0.0, seed=7)
    store, key, folder = _delivered_hour(settings)
    good = store.read_bytes(key).decode().splitlines()
    off_contract = json.loads(good[0]) | {"similar_items": None, "session_id": "s-null"}
    planted = {
        f"{folder}/activity-1-truncated": ("\n".join(good[:3]) + "\n" + good[3][:40]).encode(),
        f"{folder}/activity-1-binary": bytes(range(256)) * 4,
        f"{folder}/activity-1-null": (json.dumps(off_contract) + "\n").encode(),
        f"{folder}/.tmp-0a1b2c": b'{"half": ',
        f"{folder}/nested/activity-1-elsewhere": good[0].encode(),
        f"processing-failed/{folder}/activity-1-binary": b"\xff\xfe\x00",
    }
    for k, data in planted.items():
        store.write_bytes(k, data)
    hour = "{}-{}-{}-{}:00".format(*folder.split("/"))
    with dg.instance_for_test() as instance:
        run = defs.resolve_job_def("recommendations_job").execute_in_process(instance=instance, partition_key=hour)
        assert run.success
        meta = run.asset_materializations_for_node("recommendations")[0].metadata
        delivered_this_hour = sum(len(store.read_bytes(o.key).splitlines()) for o in store.list(folder)
                                  if o.key.rsplit("/", 1)[1].startswith("activity-1-20"))
        # the truncated object's three whole lines are duplicates of the first object's: counted once
        assert meta["dagster/row_count"].value == delivered_this_hour
        assert meta["rejected"].value == 4  # truncated line, binary object, null similar_items, binary failed
        named = meta["rejected_objects"].value
        assert named.pop(f"{folder}/activity-1-truncated").startswith("line 4: not JSON (Unterminated string")
        assert named == {
            f"{folder}/activity-1-binary": "not UTF-8 text (invalid start byte at byte 128)",
            f"{folder}/activity-1-null": "line 1: similar_items is NoneType, not an object",
            f"processing-failed/{folder}/activity-1-binary": "not UTF-8 text (invalid start byte at byte 0)",
        }
        assert sorted(meta["ignored_objects"].value) == [f"{folder}/.tmp-0a1b2c", f"{folder}/nested/activity-1-elsewhere"]
        assert meta["events"].value == meta["dagster/row_count"].value + meta["failed"].value + 4
        check = next(e for e in run.get_asset_check_evaluations() if e.check_name == "records_have_the_contract_fields")
        assert not check.passed and "4 line(s) rejected in 4 object(s)" in check.description
        lake = ObjectStore.from_url(settings.lake_url)
        kept_key = f"recommendations_rejected/hour={hour[:13]}/part-00000.ndjson"
        kept = [json.loads(line) for line in lake.read_bytes(kept_key).splitlines()]
        assert {(r["object"], r["line"]) for r in kept} == {
            (f"{folder}/activity-1-truncated", 4), (f"{folder}/activity-1-binary", 0),
            (f"{folder}/activity-1-null", 1), (f"processing-failed/{folder}/activity-1-binary", 0)}
        assert '"s-null"' in next(r for r in kept if r["line"] == 1)["text"], "the bad line itself is kept"
        if counters.records_in == counters.delivered:  # (one hour: every delivered record is in the table)
            assert meta["dagster/row_count"].value == counters.delivered

        for k in planted:
            store.delete(k)
        again = defs.resolve_job_def("recommendations_job").execute_in_process(instance=instance, partition_key=hour)
        assert again.asset_materializations_for_node("recommendations")[0].metadata["rejected"].value == 0
        assert not lake.exists(kept_key), "a clean rerun leaves no stale rejects"


def test_no_key_in_the_bucket_stops_the_definitions_or_the_sensor(catalog, settings):
    """A folder outside the calendar (month 00) and junk at the bucket's root: the definitions load,
    the sensor ticks and requests only the real hour."""
    settings = settings.with_(artifacts_url=catalog["store"].url)
    _deliver(settings, catalog["transform"], 10, 0.0, seed=8)
    store, _, folder = _delivered_hour(settings)
    store.write_bytes("2026/00/01/00/activity-1-odd", b"{}\n")
    store.write_bytes("README", b"not an hour")
    defs = build_definitions(settings, keep_spark=True)
    assert defs.resolve_all_asset_keys()
    with dg.instance_for_test() as instance:
        result = _tick(defs, instance)
        assert [r.partition_key for r in result.run_requests] == ["{}-{}-{}-{}:00".format(*folder.split("/"))] \
            or len(result.run_requests) == len(_hours(settings)) - 1  # (a delivery straddling an hour)


def test_a_failed_hour_is_requested_again_up_to_the_limit(catalog, settings):
    """The sensor records an hour when it asks for it; when that run fails, later ticks ask again with
    a new run key (MAX_RETRIES times), and stop once a run succeeds."""
    from recsys_platform.assets.streaming.sensors import MAX_RETRIES

    settings = settings.with_(artifacts_url=catalog["store"].url)
    defs = build_definitions(settings, keep_spark=True)
    _deliver(settings, catalog["transform"], 10, 0.0, seed=9)
    lake = ObjectStore.from_url(settings.lake_url)
    blocker = lake.path("recommendations")  # a file where the dataset's folder goes: every write fails
    job = defs.resolve_job_def("recommendations_job")
    os.makedirs(os.path.dirname(blocker), exist_ok=True)
    with open(blocker, "w") as f:
        f.write("in the way")
    with dg.instance_for_test() as instance:
        def run(request) -> bool:
            return job.execute_in_process(instance=instance, partition_key=request.partition_key,
                                          tags={**request.tags, "dagster/run_key": request.run_key},
                                          raise_on_error=False).success

        tick = _tick(defs, instance)
        hour = tick.run_requests[-1].partition_key
        keys = []
        for attempt in range(MAX_RETRIES + 1):
            request = next(r for r in tick.run_requests if r.partition_key == hour)
            keys.append(request.run_key)
            assert not run(request)
            tick = _tick(defs, instance, tick.cursor)
            if attempt < MAX_RETRIES:
                assert [r.partition_key for r in tick.run_requests] == [hour], f"attempt {attempt}"
                assert tick.run_requests[0].tags["recsys/retry"] == str(attempt + 1)
        assert not tick.run_requests, "after MAX_RETRIES the hour is left to a person"
        assert len(set(keys)) == MAX_RETRIES + 1

        # a fresh cursor (a person reset the sensor) asks once more; this time the lake is writable
        os.remove(blocker)
        tick = _tick(defs, instance)
        assert run(next(r for r in tick.run_requests if r.partition_key == hour))
        assert not [r for r in _tick(defs, instance, tick.cursor).run_requests if r.partition_key == hour]
