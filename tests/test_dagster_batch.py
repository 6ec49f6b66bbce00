"""The batch domain through Dagster: definitions, a single-run backfill, sensor, schedule."""

import datetime as dt

import dagster as dg
import pytest
import sqlalchemy as sa

from recsys_platform.assets.batch.assets import SOURCE_KEY, SOURCE_VERSION, TRAINING_KEY
from recsys_platform.assets.batch.jobs import OBSERVE_JOB
from recsys_platform.assets.batch.partitions import CUSTOMERS, partition_versions
from recsys_platform.assets.batch.schedules import STALE_SCHEDULE, plan_ranges, stale_keys
from recsys_platform.assets.vectors.schedules import CATALOG_SCHEDULE
from recsys_platform.batch import checks as training_checks
from recsys_platform.batch.contract import DATASET, Layout
from recsys_platform.batch.source import SourceDatabase
from recsys_platform.definitions import build_definitions
from recsys_platform.storage import lake
from recsys_platform.storage.object_store import ObjectStore


@pytest.fixture(params=["arrow", "spark"])
def defs(request, settings, spark):  # `spark` first: the resource reuses the session instead of a new one
    """The platform's definitions with each batch engine (RECSYS_ENGINE)."""
    return build_definitions(settings.with_(engine=request.param), keep_spark=True)


@pytest.fixture
def instance():
    with dg.instance_for_test() as inst:
        yield inst


def _keys(settings):
    return [str(c) for c in SourceDatabase(settings.source_url).customer_numbers()]


def _run(defs, instance, start, end):
    return defs.resolve_job_def("ratings_ml_training_job").execute_in_process(
        instance=instance, raise_on_error=False,
        tags={"dagster/asset_partition_range_start": start, "dagster/asset_partition_range_end": end})


def test_definitions_describe_every_asset_for_the_ui(defs):
    repo = defs.get_repository_def()
    specs = {s.key: s for s in defs.resolve_all_asset_specs()}
    training = specs[TRAINING_KEY]
    assert training.group_name == "batch"
    assert {training.metadata["engine"], "parquet"} <= set(training.kinds)
    assert training.owners == ["team:data-platform"]
    assert "13 columns" in training.description
    assert training.metadata["dagster/column_schema"].columns[0].name == "customerNumber"
    assert len(training.metadata["dagster/column_schema"].columns) == 13
    assert specs[SOURCE_KEY].group_name == "batch"
    assert {tuple(s.owners) for s in specs.values()} == {("team:data-platform",)}, "an owner on every asset"
    checks = {k.name for k in defs.resolve_asset_graph().asset_check_keys if k.asset_key == TRAINING_KEY}
    assert checks == set(training_checks.ALL_CHECKS)
    assert {s.name for s in repo.schedule_defs} == {STALE_SCHEDULE, CATALOG_SCHEDULE}
    assert {s.name for s in repo.sensor_defs} == {"customer_partitions_sensor", "recommendations_sensor", "retrain_sensor"}


def test_single_run_backfill_builds_every_partition_with_passing_checks(defs, settings, instance):
    keys = _keys(settings)
    instance.add_dynamic_partitions(CUSTOMERS.name, keys)
    result = _run(defs, instance, keys[0], keys[-1])
    assert result.success
    evaluations = result.get_asset_check_evaluations()
    assert {e.check_name for e in evaluations} == set(training_checks.ALL_CHECKS)
    assert all(e.passed for e in evaluations), [(e.check_name, e.description) for e in evaluations if not e.passed]
    assert len(instance.get_run_records()) == 1, "one run (one Spark job) for the whole backfill"

    mats = result.asset_materializations_for_node(DATASET)
    assert {m.partition for m in mats} == set(keys)
    db = SourceDatabase(settings.source_url)
    assert mats[0].metadata["run_rows"].value == db.count_ratings()
    assert mats[0].metadata["partitions_written"].value == len(keys)
    per_customer = db.read_arrow("ratings")["customerNumber"].value_counts().to_pylist()
    expected = {str(d["values"]): d["counts"] for d in per_customer}
    for m in mats:  # each partition's page tells its own story, not the run's
        assert m.metadata["dagster/row_count"].value == expected[m.partition], m.partition
        preview = m.metadata["preview"].value
        assert preview.records and {r.data["customerNumber"] for r in preview.records} == {int(m.partition)}
        assert sum(m.metadata["rating_distribution"].value.values()) == expected[m.partition]
        assert m.metadata["location"].value.endswith(f"customerNumber={m.partition}/{lake.PART_FILE}")
    store = ObjectStore.from_url(settings.lake_url)
    assert lake.list_partition_keys(store, DATASET, "customerNumber") == sorted(keys)

    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=TRAINING_KEY), limit=1000).records
    recorded = {r.partition_key: r.asset_materialization.metadata[SOURCE_VERSION].value for r in records}
    assert recorded == partition_versions(Layout(), SourceDatabase(settings.source_url).customer_versions())


def test_a_bad_source_fails_the_run_with_the_violation_and_writes_nothing(defs, settings, instance):
    keys = _keys(settings)
    instance.add_dynamic_partitions(CUSTOMERS.name, keys)
    engine = sa.create_engine(settings.source_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE ratings SET productRating = 11 WHERE rowid = 3"))
    result = _run(defs, instance, keys[0], keys[-1])
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "rating_range" in failure.step_failure_data.user_failure_data.description
    assert "ratings.productRating" in failure.step_failure_data.user_failure_data.description
    assert not ObjectStore.from_url(settings.lake_url).exists(DATASET)


def test_sensor_registers_new_customers_once(defs, settings, instance):
    sensor = defs.resolve_sensor_def("customer_partitions_sensor")
    with dg.build_sensor_context(instance=instance, resources={"source": defs.resources["source"]}) as ctx:
        result = sensor(ctx)
    assert isinstance(result, dg.SensorResult)
    (request,) = result.dynamic_partitions_requests
    assert sorted(request.partition_keys) == sorted(_keys(settings))
    instance.add_dynamic_partitions(CUSTOMERS.name, list(request.partition_keys))
    with dg.build_sensor_context(instance=instance, resources={"source": defs.resources["source"]}) as ctx:
        again = sensor(ctx)
    assert isinstance(again, dg.SkipReason)


def test_daily_schedule_backfills_only_stale_partitions(defs, settings, instance):
    keys = _keys(settings)
    instance.add_dynamic_partitions(CUSTOMERS.name, keys)
    schedule = defs.resolve_schedule_def(STALE_SCHEDULE)

    def tick():
        with dg.build_schedule_context(instance=instance, resources={"source": defs.resources["source"]},
                                       scheduled_execution_time=dt.datetime(2026, 11, 28, 3, tzinfo=dt.timezone.utc)) as ctx:
            return schedule.evaluate_tick(ctx)

    def observe():
        assert defs.resolve_job_def(OBSERVE_JOB).execute_in_process(instance=instance).success

    def dagster_stale() -> set[str]:
        """What the UI marks stale: Dagster's own per-partition status from the observed versions."""
        from dagster._core.definitions.data_version import StaleStatus
        from dagster._utils.test.data_versions import get_stale_status_resolver

        resolver = get_stale_status_resolver(instance, list(defs.assets))
        return {k for k in keys if resolver.get_status(TRAINING_KEY, k) == StaleStatus.STALE}

    first = tick().run_requests
    assert [(r.tags["dagster/asset_partition_range_start"], r.tags["dagster/asset_partition_range_end"]) for r in first] == [(keys[0], keys[-1])]
    observe()
    assert _run(defs, instance, keys[0], keys[-1]).success
    assert tick().skip_message and "up to date" in tick().skip_message
    assert dagster_stale() == set()

    changed = keys[40]
    with sa.create_engine(settings.source_url).begin() as conn:
        conn.execute(sa.text(f"UPDATE ratings SET productRating = 6 - productRating WHERE customerNumber = {changed}"))
    (request,) = tick().run_requests
    assert (request.tags["dagster/asset_partition_range_start"], request.tags["dagster/asset_partition_range_end"]) == (changed, changed)
    observe()
    assert dagster_stale() == {changed}, "the UI marks exactly the changed customer's partition stale"
    assert request.run_key == f"stale-2026-11-28T03:00-{changed}-{changed}"
    # A build still queued or running: the tick waits instead of asking for the same partition twice.
    job = defs.resolve_job_def("ratings_ml_training_job")
    running = instance.create_run_for_job(job, status=dg.DagsterRunStatus.STARTED)
    assert f"run {running.run_id}" in tick().skip_message
    assert job.tags["recsys/queue"] == "batch-engine", "the run queue's one slot for the batch engine"


def test_stale_keys_include_never_built_changed_and_vanished_partitions():
    assert stale_keys(["1", "2", "3", "4"], {"1": "a", "2": "b", "3": "c"}, {"1": "a", "2": "x", "4": "d"}) == ["2", "3", "4"]


@pytest.mark.parametrize(("stale", "max_runs", "expected"), [
    (set(), 4, []),
    ({"b", "c", "d"}, 4, [("b", "d")]),
    ({"a", "c", "g"}, 4, [("a", "a"), ("c", "c"), ("g", "g")]),
    ({"a", "c", "g"}, 2, [("a", "c"), ("g", "g")]),
    ({"a", "c", "g"}, 1, [("a", "g")]),
])
def test_stale_partitions_are_covered_by_few_contiguous_ranges(stale, max_runs, expected):
    assert plan_ranges(list("abcdefg"), stale, max_runs) == expected


def test_hash_bucket_layout_runs_through_dagster_with_static_partitions(settings, spark):
    defs = build_definitions(settings.with_(hash_buckets=4), keep_spark=True)
    specs = {s.key: s for s in defs.resolve_all_asset_specs()}
    assert specs[TRAINING_KEY].partitions_def.get_partition_keys() == ["0", "1", "2", "3"]
    with dg.instance_for_test() as instance:
        result = _run(defs, instance, "0", "3")
        assert result.success
        assert all(e.passed for e in result.get_asset_check_evaluations())
    store = ObjectStore.from_url(settings.lake_url)
    assert lake.list_partition_keys(store, DATASET, "customer_bucket") == ["0", "1", "2", "3"]


def test_definitions_load_through_the_dagster_cli(settings):
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    env = {**os.environ, "RECSYS_HOME": settings.home}
    proc = subprocess.run([sys.executable, "-m", "dagster", "definitions", "validate", "-w", str(REPO / "workspace.yaml")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "Validation successful" in proc.stdout + proc.stderr


def test_dg_checks_the_project_and_names_a_bad_setting(settings):
    """`dg check defs` (the dg CLI, [tool.dg] in pyproject.toml) loads definitions.py; a bad
    setting fails the load with the variable's name."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tests.conftest import REPO

    dg_cli = Path(sys.executable).parent / "dg"  # installed beside this Python with dagster-dg-cli
    assert dg_cli.exists(), f"dagster-dg-cli is a dependency: no {dg_cli}"
    env = {**os.environ, "RECSYS_HOME": settings.home}
    ok = subprocess.run([str(dg_cli), "check", "defs"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stdout[-2000:] + ok.stderr[-2000:]
    assert "All definitions loaded successfully" in ok.stdout + ok.stderr
    bad = subprocess.run([str(dg_cli), "check", "defs"], cwd=REPO, env={**env, "RECSYS_HASH_BUCKETS": "many"},
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0
    assert "RECSYS_HASH_BUCKETS must be a whole number" in bad.stdout + bad.stderr


@pytest.mark.s3
def test_aws_profile_launches_the_glue_job_through_pipes(settings, spark, s3_bucket, s3_endpoint):
    """moto's Glue API records the run (it does not run it): the wiring is what is tested."""
    import boto3
    from dagster_pipes import decode_param

    glue = boto3.client("glue", endpoint_url=s3_endpoint, region_name="us-east-1")
    glue.create_job(Name="recsys-ratings-ml-training", Role="arn:aws:iam::000000000000:role/glue",
                    Command={"Name": "glueetl", "ScriptLocation": f"s3://{s3_bucket}/_glue/ratings_ml_training.py"})
    aws = settings.with_(lake_url=f"s3://{s3_bucket}/lake", glue_job="recsys-ratings-ml-training",
                         pipes_bucket=s3_bucket, aws_endpoint_url=s3_endpoint)
    defs = build_definitions(aws, keep_spark=True)
    keys = _keys(settings)[:3]
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(CUSTOMERS.name, keys)
        result = _run(defs, instance, keys[0], keys[-1])
    (run,) = glue.get_job_runs(JobName="recsys-ratings-ml-training")["JobRuns"]
    args = run["Arguments"]
    assert args["--RECSYS_LAKE_URL"] == f"s3://{s3_bucket}/lake"
    assert decode_param(args["--dagster-pipes-context"])["bucket"] == s3_bucket
    assert decode_param(args["--dagster-pipes-messages"])["bucket"] == s3_bucket
    # Nothing ran, so nothing was written: the blocking checks say so and the run fails.
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert not evaluations["row_count_matches_source"].passed
    assert not result.success


@pytest.mark.mariadb
@pytest.mark.s3
def test_the_glue_script_runs_for_real_through_pipes(settings, mysql_url, jdbc_jar, s3_bucket, s3_endpoint):
    """The packaged Glue entry point as its own process with the arguments Glue passes: the source's
    secret from Secrets Manager, the Pipes context and messages through the S3-compatible bucket,
    Spark JDBC to MariaDB. Only the launch is local (deploy/local_glue.py)."""
    import json

    import boto3

    from recsys_platform.batch.engines.spark import MARIADB_DRIVER
    from recsys_platform.batch.seed import seed

    seed(sa.create_engine(mysql_url))
    url = sa.engine.make_url(mysql_url)
    secret = boto3.client("secretsmanager", endpoint_url=s3_endpoint, region_name="us-east-1").create_secret(
        Name=f"source-{s3_bucket}", SecretString=json.dumps({"username": url.username, "password": url.password}))
    arguments = {  # what infra/'s default_arguments hold, plus the driver this machine has
        "--RECSYS_SOURCE_JDBC_URL": f"jdbc:mysql://{url.host}:{url.port}/{url.database}",
        "--RECSYS_SOURCE_SECRET_ARN": secret["ARN"], "--RECSYS_JDBC_DRIVER": MARIADB_DRIVER,
        "--extra-jars": jdbc_jar}
    aws = settings.with_(source_url=mysql_url, lake_url=f"s3://{s3_bucket}/lake", glue_job="recsys-ratings-ml-training",
                         pipes_bucket=s3_bucket, aws_endpoint_url=s3_endpoint, glue_launcher="local",
                         glue_arguments=arguments)
    defs = build_definitions(aws, keep_spark=True)
    keys = [str(c) for c in SourceDatabase(mysql_url).customer_numbers()][:3]
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(CUSTOMERS.name, keys)
        result = _run(defs, instance, keys[0], keys[-1])
    assert result.success, [e.message for e in result.all_events if e.is_failure][:3]
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert all(e.passed for e in evaluations.values()), {k: e.description for k, e in evaluations.items()}
    meta = result.asset_materializations_for_node("ratings_ml_training")[0].metadata
    assert meta["extraction"].value == "spark-jdbc", "reported by the script through Pipes messages in S3"
    assert meta["jdbc_driver"].value == MARIADB_DRIVER and meta["AWS Glue Job Run ID"].value.startswith("jr_")
    store = ObjectStore.from_url(f"s3://{s3_bucket}/lake", endpoint_url=s3_endpoint)
    written = {o.key.split("/")[1] for o in store.list("ratings_ml_training/")}
    assert written == {f"customerNumber={k}" for k in keys}


@pytest.fixture
def arrow_defs(settings):
    return build_definitions(settings.with_(engine="arrow"), keep_spark=True)


def _train(defs, instance, **config):
    return defs.resolve_job_def("model_and_vectors_job").execute_in_process(
        instance=instance, raise_on_error=False, op_selection=["recommender_model"],
        run_config={"ops": {"recommender_model": {"config": {"max_iter": 100, **config}}}})


def _failure(result) -> str:
    return next(e for e in result.all_events if e.is_step_failure).step_failure_data.user_failure_data.description


def test_a_deleted_customer_leaves_the_lake_and_the_next_model(arrow_defs, settings, instance):
    """The highest-numbered customer deleted from the source: a run over only that partition
    succeeds with 0 rows and removes the folder; the stale schedule asks for it; the next model
    neither trains on the customer nor has a vector for it."""
    from recsys_platform.ml import artifacts

    keys = _keys(settings)
    instance.add_dynamic_partitions(CUSTOMERS.name, keys)
    assert _run(arrow_defs, instance, keys[0], keys[-1]).success
    gone = keys[-1]
    with sa.create_engine(settings.source_url).begin() as conn:
        for table in ("ratings", "payments", "orderdetails", "orders", "customers"):
            if table == "orderdetails":
                conn.execute(sa.text(f"DELETE FROM orderdetails WHERE orderNumber IN (SELECT orderNumber FROM orders "
                                     f"WHERE customerNumber = {gone})"))
            else:
                conn.execute(sa.text(f"DELETE FROM {table} WHERE customerNumber = {gone}"))
    schedule = arrow_defs.resolve_schedule_def(STALE_SCHEDULE)
    with dg.build_schedule_context(instance=instance, resources={"source": arrow_defs.resources["source"]},
                                   scheduled_execution_time=dt.datetime(2026, 12, 3, 3, tzinfo=dt.timezone.utc)) as ctx:
        (request,) = schedule.evaluate_tick(ctx).run_requests
    assert (request.tags["dagster/asset_partition_range_start"], request.tags["dagster/asset_partition_range_end"]) \
        == (gone, gone)
    only_deleted = _run(arrow_defs, instance, gone, gone)
    assert only_deleted.success, "a run over only deleted partitions succeeds"
    assert all(e.passed for e in only_deleted.get_asset_check_evaluations())
    meta = only_deleted.asset_materializations_for_node(TRAINING_KEY.path[-1])[0].metadata
    assert meta["run_rows"].value == 0 and meta["partitions_removed"].value == 1
    store = ObjectStore.from_url(settings.lake_url)
    assert gone not in lake.list_partition_keys(store, DATASET, "customerNumber")

    model = _train(arrow_defs, instance)
    assert model.success, _failure(model) if not model.success else ""
    assert model.asset_materializations_for_node("recommender_model")[0].metadata["lake_matches_builds"].value
    assert next(e for e in model.get_asset_check_evaluations() if e.check_name == "lake_matches_its_last_builds").passed
    _, _, emb = artifacts.load_embeddings(ObjectStore.from_url(settings.artifacts_url))
    users = {str(u) for u in emb["user"][0]}
    assert gone not in users and len(users) == len(keys) - 1


def test_a_partial_build_never_feeds_a_model(arrow_defs, settings, instance):
    """Partitions a failed build wrote, or changed, or a built one gone: the model refuses, naming
    the difference; the escape hatch trains on the lake as it is and says so."""
    keys = _keys(settings)
    instance.add_dynamic_partitions(CUSTOMERS.name, keys)
    store = ObjectStore.from_url(settings.lake_url)
    with dg.instance_for_test() as fresh:  # a lake no successful build wrote (a build that died half way)
        fresh.add_dynamic_partitions(CUSTOMERS.name, keys)
        arrow_defs.resolve_job_def("ratings_ml_training_job").execute_in_process(
            instance=fresh, raise_on_error=False, partition_key=keys[0])  # one partition, recorded there only
        refused = _train(arrow_defs, instance)
        assert not refused.success
        assert f"1 partition(s) in the lake that no successful build wrote (e.g. {keys[0]}" in _failure(refused)

    assert _run(arrow_defs, instance, keys[0], keys[-1]).success
    table = lake.read_partitions(store, DATASET, "customerNumber", [keys[5]])
    store.write_bytes(lake.partition_file(DATASET, "customerNumber", keys[5]),
                      lake.encode_parquet(table.drop_columns(["customerNumber"]).slice(0, 1)))
    store.delete_dir(f"{DATASET}/customerNumber={keys[7]}")
    refused = _train(arrow_defs, instance)
    assert not refused.success
    message = _failure(refused)
    assert f"1 partition(s) whose rows differ from their last successful build (e.g. {keys[5]}: 1 in the lake, " \
        f"{table.num_rows} built)" in message
    assert f"1 built partition(s) missing from the lake (e.g. {keys[7]})" in message
    assert "Rebuild those partitions" in message and "require_built_lake: false" in message
    (check,) = refused.get_asset_check_evaluations()
    assert check.check_name == "lake_matches_its_last_builds" and not check.passed
    assert check.severity == dg.AssetCheckSeverity.ERROR and f"{keys[7]}" in check.description

    as_it_is = _train(arrow_defs, instance, require_built_lake=False)
    assert as_it_is.success
    assert not as_it_is.asset_materializations_for_node("recommender_model")[0].metadata["lake_matches_builds"].value
    lake_check = next(e for e in as_it_is.get_asset_check_evaluations() if e.check_name == "lake_matches_its_last_builds")
    assert not lake_check.passed and lake_check.severity == dg.AssetCheckSeverity.WARN
    assert "trained anyway" in lake_check.description


def test_the_retrain_sensor_asks_once_per_change_after_every_build_finished(settings, instance):
    """No model yet and no build: nothing; a build: one request, whose run key names that build;
    a build still running: wait; a model newer than the data: nothing; enough new interactions:
    one request; at most once per period."""
    arrow_defs = build_definitions(settings.with_(engine="arrow", retrain_min_minutes=0, retrain_interactions=1000),
                                   keep_spark=True)

    def tick(defs=arrow_defs):
        with dg.build_sensor_context(instance=instance, definitions=defs) as ctx:
            return defs.resolve_sensor_def("retrain_sensor").evaluate_tick(ctx)

    assert "never built" in tick().skip_message
    keys = _keys(settings)
    instance.add_dynamic_partitions(CUSTOMERS.name, keys)
    assert _run(arrow_defs, instance, keys[0], keys[-1]).success
    (request,) = tick().run_requests
    assert request.job_name in (None, "model_and_vectors_job") and request.run_key.startswith("retrain-after-")
    assert tick().run_requests[0].run_key == request.run_key, "the same change: the same run key (deduplicated)"

    running = instance.create_run_for_job(arrow_defs.resolve_job_def("ratings_ml_training_job"),
                                          status=dg.DagsterRunStatus.STARTED)
    assert f"run {running.run_id} of ratings_ml_training_job is not finished" in tick().skip_message
    instance.report_run_canceled(running)

    assert _train(arrow_defs, instance).success
    assert "the model is newer" in tick().skip_message
    assert _run(arrow_defs, instance, keys[3], keys[3]).success  # one partition rebuilt: a new change
    (again,) = tick().run_requests
    assert again.run_key != request.run_key
    hourly = settings.with_(retrain_min_minutes=60)
    assert "the model was trained 0 min ago (at most once in 60 min)" in tick(build_definitions(hourly)).skip_message

    assert _train(arrow_defs, instance).success
    for hour, rows in (("2026-12-01-10:00", 400), ("2026-12-01-11:00", 500), ("2026-12-01-10:00", 450)):
        instance.report_runless_asset_event(dg.AssetMaterialization(
            "interactions", partition=hour, metadata={"dagster/row_count": rows}))
    assert "fewer than 1,000 interactions arrived since" in tick().skip_message, "an hour ingested again counts once"
    instance.report_runless_asset_event(dg.AssetMaterialization(
        "interactions", partition="2026-12-01-12:00", metadata={"dagster/row_count": 60}))
    (fed,) = tick().run_requests
    assert fed.tags["recsys/trigger"] == "1,010 new interactions" and fed.run_key.startswith("retrain-after-interactions-")
