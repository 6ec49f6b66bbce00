"""The production Dagster deployment (deploy/dagster_instance.py, `make serve-dagster`): the
daemon and the webserver over PostgreSQL storage launch, by themselves, the rebuild of exactly
the partition whose source changed (stale-partition schedule), then a new model and its vectors
(retrain sensor), and the ingestion of a new hour of recommendations (sensor), through the run
queue."""

from __future__ import annotations

import time

import dagster as dg
import pytest
import sqlalchemy as sa

from recsys_platform.assets.batch.assets import SOURCE_VERSION, TRAINING_KEY
from recsys_platform.assets.batch.partitions import CUSTOMERS, partition_versions
from recsys_platform.assets.batch.schedules import STALE_SCHEDULE
from recsys_platform.assets.ml.assets import MODEL_KEY
from recsys_platform.assets.vectors.sensors import RETRAIN_SENSOR
from recsys_platform.batch.contract import Layout
from recsys_platform.batch.source import SourceDatabase
from recsys_platform.definitions import build_definitions
from recsys_platform.deploy.dagster_instance import (
    BATCH_QUEUE,
    MAX_RETRIES,
    MODEL_QUEUE,
    PG_URL_VAR,
    QUEUE_KEY,
    dagster_home,
    prepare,
    serving,
)
from recsys_platform.vectors.embedded import stop_embedded
from tests.browser import free_port, graphql
from tests.test_dagster_streaming import _deliver, _hours

pytestmark = pytest.mark.production


def _finished_run(instance: dg.DagsterInstance, tags: dict[str, str], timeout: float, logs,
                  which=lambda run: True) -> dg.DagsterRun:
    """The first run with these tags (and `which` true of it) to finish, launched by the daemon
    within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = instance.get_runs(dg.RunsFilter(tags=tags))
        done = [r for r in runs if r.is_finished and which(r)]
        if done:
            return done[0]
        time.sleep(2)
    raise AssertionError(f"no finished run tagged {tags} after {timeout:.0f} s; daemon log:\n"
                         + (logs / "daemon.log").read_text(errors="replace")[-4000:])


def test_the_daemon_rebuilds_the_changed_partition_and_ingests_the_new_hour(catalog, settings, monkeypatch, request,
                                                                           tmp_path):
    import shutil
    from pathlib import Path

    from recsys_platform.ml import artifacts
    from recsys_platform.storage.object_store import ObjectStore
    from recsys_platform.vectors.store import VectorStore
    from recsys_platform.wiring import vector_dsn

    # The retraining publishes a model: into a copy of the session's artifacts, never into them.
    shutil.copytree(Path(catalog["store"].root), tmp_path / "ml-artifacts")
    # (retrain_min_minutes=0: the model below is recorded just before the change it must answer;
    # retrain_interactions=100: the hour delivered after the retraining is enough for another)
    settings = settings.with_(artifacts_url=(tmp_path / "ml-artifacts").as_uri(), stale_cron="* * * * *",
                              engine="arrow", retrain_min_minutes=0, retrain_interactions=100)
    request.addfinalizer(lambda: stop_embedded(settings.pgdata))  # prepare() starts the instance's PostgreSQL
    env = prepare(settings)
    assert env[PG_URL_VAR].startswith("postgresql+psycopg2://") and "/dagster?" in env[PG_URL_VAR]
    monkeypatch.setenv("DAGSTER_HOME", env["DAGSTER_HOME"])
    monkeypatch.setenv(PG_URL_VAR, env[PG_URL_VAR])
    keys = [str(c) for c in SourceDatabase(settings.source_url).customer_numbers()]
    changed = keys[17]
    with dg.DagsterInstance.get() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        assert instance.run_retries_enabled and instance.run_retries_max_retries == MAX_RETRIES
        # Everything built once (as a backfill would), then one customer's ratings change.
        instance.add_dynamic_partitions(CUSTOMERS.name, keys)
        built = build_definitions(settings).resolve_job_def("ratings_ml_training_job").execute_in_process(
            instance=instance, tags={"dagster/asset_partition_range_start": keys[0],
                                     "dagster/asset_partition_range_end": keys[-1]})
        assert built.success
        # A model trained after that build (recorded), so the retrain sensor waits for a change.
        instance.report_runless_asset_event(dg.AssetMaterialization(MODEL_KEY, description="trained after the build"))
        with sa.create_engine(settings.source_url).begin() as conn:
            conn.execute(sa.text("UPDATE ratings SET productRating = 6 - productRating WHERE customerNumber = :c"),
                         {"c": int(changed)})
        counters = _deliver(settings, catalog["transform"], 120, 0.0, seed=11)  # a new hour in the bucket
        hour = _hours(settings)[-1]

        port = free_port()
        with serving(settings, port=port) as processes:
            logs = dagster_home(settings) / "logs"
            rebuild = _finished_run(instance, {"dagster/schedule_name": STALE_SCHEDULE}, 200, logs)
            ingest = _finished_run(instance, {"dagster/sensor_name": "recommendations_sensor"}, 120, logs)
            retrain = _finished_run(instance, {"dagster/sensor_name": RETRAIN_SENSOR}, 300, logs)
            # What customers do next: new events into the hour, ingested, then a retraining on them.
            _deliver(settings, catalog["transform"], 120, 0.0, seed=12)
            fed = _finished_run(instance, {"dagster/sensor_name": RETRAIN_SENSOR}, 300, logs,
                                lambda r: r.tags.get("recsys/trigger", "").endswith("new interactions")
                                and "training data" not in r.tags["recsys/trigger"])
            seen = graphql(port, "{ runsOrError { ... on Runs { results { runId status } } } }")
            assert all(p.poll() is None for p in processes.values()), "webserver and daemon still running"

        # Exactly the changed partition, built from the source as it is now, through the queue.
        assert rebuild.status == dg.DagsterRunStatus.SUCCESS, rebuild.run_id
        assert (rebuild.tags["dagster/asset_partition_range_start"],
                rebuild.tags["dagster/asset_partition_range_end"]) == (changed, changed)
        assert rebuild.tags[QUEUE_KEY] == BATCH_QUEUE
        enqueued = instance.get_records_for_run(rebuild.run_id, of_type=dg.DagsterEventType.RUN_ENQUEUED).records
        assert enqueued, "launched through the run queue"
        (latest,) = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=TRAINING_KEY, asset_partitions=[changed]), limit=1).records
        assert latest.run_id == rebuild.run_id
        current = partition_versions(Layout(buckets=settings.hash_buckets),
                                     SourceDatabase(settings.source_url).customer_versions())
        assert latest.asset_materialization.metadata[SOURCE_VERSION].value == current[changed]
        # The new hour, ingested by the run the sensor asked for.
        assert ingest.status == dg.DagsterRunStatus.SUCCESS and ingest.tags["dagster/partition"] == hour
        (ingested,) = [r for r in instance.fetch_materializations(dg.AssetRecordsFilter(
            asset_key=dg.AssetKey("recommendations"), asset_partitions=[hour]), limit=10).records
            if r.run_id == ingest.run_id]
        assert ingested.asset_materialization.metadata["events"].value == counters.records_in
        # The webserver reads the same PostgreSQL instance.
        statuses = {r["runId"]: r["status"] for r in seen["runsOrError"]["results"]}
        assert statuses[rebuild.run_id] == "SUCCESS" and statuses[ingest.run_id] == "SUCCESS"
        # Then, with no person: a new model trained on the rebuilt lake, and its vectors serving.
        assert retrain.status == dg.DagsterRunStatus.SUCCESS, retrain.run_id
        assert retrain.job_name == "model_and_vectors_job" and retrain.tags[QUEUE_KEY] == MODEL_QUEUE
        assert retrain.tags["dagster/run_key"] == f"retrain-after-{latest.storage_id}", "after the rebuild"
        store = ObjectStore.from_url(settings.artifacts_url)
        assert artifacts.current_version(store) != catalog["version"]
        assert VectorStore(vector_dsn(settings)).active_version() == artifacts.current_version(store)
        # And again on what the stream taught: the retraining's model read the hour's interactions.
        assert fed.status == dg.DagsterRunStatus.SUCCESS, fed.run_id
        assert fed.tags["dagster/run_key"].startswith("retrain-after-interactions-")
        (model,) = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=MODEL_KEY), limit=1,
                                                   ascending=False).records
        assert model.run_id == fed.run_id
        assert model.asset_materialization.metadata["interactions_read"].value > 100
        assert VectorStore(vector_dsn(settings)).active_version() == artifacts.current_version(store) \
            == model.asset_materialization.metadata["model_version"].value
