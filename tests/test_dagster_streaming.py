"""The streaming side through Dagster: the sensor requests the right hour, the asset compacts it."""

import datetime as dt
import json

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