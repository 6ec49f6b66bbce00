"""The README's demo command end to end, then the Dagster UI's view of it through GraphQL."""

import re
import subprocess
import sys

import pytest

from recsys_platform.batch.contract import DATASET, Selection
from recsys_platform.batch.source import SourceDatabase
from recsys_platform.settings import Settings
from recsys_platform.storage import lake
from recsys_platform.storage.object_store import ObjectStore
from tests.browser import REPO, demo_env, graphql


def test_demo_leaves_one_folder_per_customer_with_exactly_the_sources_rows(demo_home):
    out = (demo_home / "demo.out").read_text()
    stdout = out.split("\n--- stderr ---\n")[0]
    assert "all checks passed" in out
    assert "  seeded sqlite:///" in out
    assert "  recommender_model " in out and "held-out RMSE" in out
    # The demo's collaborative seed: 110 products, one never rated (so never embedded), 122 customers.
    assert "  pgvector: item_emb 109 rows, user_emb 122 rows" in out
    assert re.search(r"  \d+ events: delivered", out) and "balanced: True" in out
    assert "  known customer " in out and "  new customer " in out
    assert "  hour " in out and "✓ the hour ingested" in out
    hit_rate = re.search(r"online hit rate@5 ([\d.]+)% of (\d+) answers", out)
    assert hit_rate and int(hit_rate.group(2)) > 100, "sessions of several events: answers are judged"
    # Random lists of 5 of 110 products hit about one session in eight; the seed's tastes, learned
    # from the ratings, do far better (36% here).
    assert float(hit_rate.group(1)) > 20
    assert len(stdout.strip().splitlines()) <= 24, "the summary fits on one screen"
    assert " - dagster - DEBUG - " not in out, "Dagster's event log goes to the log file"
    assert "RUN_SUCCESS" in (demo_home / "logs" / "dagster.log").read_text()
    assert f"make ui RECSYS_HOME={demo_home}" in out
    settings = Settings.build(home=str(demo_home))
    db = SourceDatabase(settings.source_url)
    store = ObjectStore.from_url(settings.lake_url)
    customers = [str(c) for c in db.customer_numbers()]
    assert lake.list_partition_keys(store, DATASET, "customerNumber") == sorted(customers)
    assert lake.read_partitions(store, DATASET, "customerNumber").num_rows == db.count_ratings()


def test_the_demo_build_plans_its_partitions_in_one_event(demo_home):
    """`planned_as_one_event`: one planned event naming every partition, not one per partition."""
    import os

    import dagster as dg

    from recsys_platform.cli.demo import PLANNED_AS_SUBSET

    assert PLANNED_AS_SUBSET not in os.environ
    with dg.DagsterInstance.from_config(str(demo_home / "dagster_home")) as instance:
        run = instance.get_runs(dg.RunsFilter(job_name="ratings_ml_training_job"))[0]
        planned = [e.dagster_event for e in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION_PLANNED)]
        materialized = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
    assert len(planned) == 1
    subset = planned[0].asset_materialization_planned_data.partitions_subset
    keys = sorted(m.dagster_event.partition for m in materialized)
    assert len(keys) == 122 and sorted(subset.get_partition_keys()) == keys


def test_demo_is_rerunnable_and_fails_loudly_on_a_bad_source(demo_home, tmp_path):
    import shutil

    import sqlalchemy as sa

    home = tmp_path / "bad"
    shutil.copytree(demo_home, home, ignore=shutil.ignore_patterns("tmp", "dagster_home", "pgdata"))
    with sa.create_engine(f"sqlite:///{home / 'classicmodels.db'}").begin() as conn:
        conn.execute(sa.text("UPDATE ratings SET productRating = 0 WHERE rowid = 1"))
    proc = subprocess.run([sys.executable, "-m", "recsys_platform.cli", "demo"], cwd=REPO, env=demo_env(home),
                          capture_output=True, text=True, timeout=600)
    from recsys_platform.vectors.embedded import stop_embedded

    stop_embedded(home / "pgdata")  # started once the source check passed; the bad rows stop the build
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr[-3000:]
    assert "error: building ratings_ml_training failed" in proc.stderr
    assert "rating_range" in proc.stderr and "ratings.productRating" in proc.stderr
    assert "the full log is in" in proc.stderr


def test_a_customer_deleted_from_the_source_leaves_the_lake_the_model_and_the_served_vectors(demo_home, tmp_path):
    """The demo run again (same Dagster instance) after the highest-numbered customer left the
    source: it rebuilds every registered partition, so the customer's folder goes, and the next
    model and the vectors it loads have no vector for them, even though the first run's stream
    holds their events (the interactions of a deleted customer never train). Before, it rebuilt
    only the range of current customers: the lake kept 2,372 rows against the source's 2,348, and
    the vector served."""
    import shutil

    import sqlalchemy as sa

    from recsys_platform.vectors.embedded import embedded_dsn, stop_embedded
    from recsys_platform.vectors.store import VectorStore

    home = tmp_path / "deleted"
    shutil.copytree(demo_home, home, ignore=shutil.ignore_patterns("tmp", "pgdata"))
    settings = Settings.build(home=str(home))
    db = SourceDatabase(settings.source_url)
    gone = max(db.customer_numbers())
    with sa.create_engine(settings.source_url).begin() as conn:
        conn.execute(sa.text(f"DELETE FROM orderdetails WHERE orderNumber IN "
                             f"(SELECT orderNumber FROM orders WHERE customerNumber = {gone})"))
        for table in ("ratings", "payments", "orders", "customers"):
            conn.execute(sa.text(f"DELETE FROM {table} WHERE customerNumber = {gone}"))
    try:
        proc = subprocess.run([sys.executable, "-m", "recsys_platform.cli", "demo"], cwd=REPO, env=demo_env(home),
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        assert "all checks passed" in proc.stdout
        store = ObjectStore.from_url(settings.lake_url)
        assert str(gone) not in lake.list_partition_keys(store, DATASET, "customerNumber")
        assert lake.read_partitions(store, DATASET, "customerNumber").num_rows == db.count_ratings()
        served = set(VectorStore(embedded_dsn(home / "pgdata")).user_ids())
        # The customers of the source, and those the first run's stream introduced (the producer
        # numbers them from 900,000); not the one deleted, though its events are in the lake.
        assert gone not in served and set(db.customer_numbers()) <= served
        assert served - set(db.customer_numbers()) and min(served - set(db.customer_numbers())) >= 900_000
    finally:
        stop_embedded(home / "pgdata")


@pytest.mark.webserver
def test_the_ui_shows_the_batch_assets_checks_and_latest_materialization(demo_home, webserver):
    port = webserver
    settings = Settings.build(home=str(demo_home))
    db = SourceDatabase(settings.source_url)
    partition = str(db.customer_numbers()[5])
    own_rows = db.count_ratings(Selection.of_customers([int(partition)]))
    data = graphql(port, """{
      assetNodes { assetKey { path } groupName description kinds hasAssetChecks
        owners { ... on TeamAssetOwner { team } }
        assetChecksOrError { ... on AssetChecks { checks { name blocking } } } }
      assetOrError(assetKey: {path: ["ratings_ml_training"]}) { ... on Asset {
        assetMaterializations(partitions: ["PARTITION"], limit: 1) { partition runId
          metadataEntries { label ... on IntMetadataEntry { intValue } } } } }
    }""".replace("PARTITION", partition))
    nodes = {"/".join(n["assetKey"]["path"]): n for n in data["assetNodes"]}
    training = nodes["ratings_ml_training"]
    assert training["groupName"] == "batch" and nodes["classicmodels_ratings"]["groupName"] == "batch"
    assert nodes["recommender_model"]["groupName"] == "ml"
    assert nodes["item_emb"]["groupName"] == nodes["user_emb"]["groupName"] == "vectors"
    assert {"pgvector", "postgres"} <= set(nodes["item_emb"]["kinds"])
    assert nodes["user_emb"]["hasAssetChecks"], "user_emb's own checks are on user_emb"
    assert nodes["recommendations"]["groupName"] == "streaming"
    assert {"arrow", "parquet"} <= set(training["kinds"])  # the one-machine engine, by default
    for name, node in nodes.items():
        assert node["owners"] == [{"team": "data-platform"}], f"{name}: an owner on every asset"
    assert "Glue join" in training["description"]
    checks = {c["name"]: c["blocking"] for c in training["assetChecksOrError"]["checks"]}
    assert checks.keys() == {"training_schema", "rating_range", "no_null_keys", "products_exist",
                             "row_count_matches_source", "unique_customer_product"}
    assert all(checks.values())
    (latest,) = data["assetOrError"]["assetMaterializations"]
    assert latest["partition"] == partition
    entries = {e["label"]: e.get("intValue") for e in latest["metadataEntries"]}
    assert entries["dagster/row_count"] == own_rows, "the partition's own row count, not the run's"
    assert entries["run_rows"] == db.count_ratings()
    assert {"preview", "rating_distribution", "source_version", "partitions_written"} <= entries.keys()
