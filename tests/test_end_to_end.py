"""The README's demo command end to end, then the Dagster UI's view of it through GraphQL."""

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from recsys_platform.batch.contract import DATASET, Selection
from recsys_platform.batch.source import SourceDatabase
from recsys_platform.settings import Settings
from recsys_platform.storage import lake
from recsys_platform.storage.object_store import ObjectStore

REPO = Path(__file__).resolve().parents[1]


def _env(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RECSYS_") or k.startswith("RECSYS_TEST")}
    env.update(RECSYS_HOME=str(home), DAGSTER_HOME=str(home / "dagster_home"), TMPDIR=str(home / "tmp"))
    (home / "tmp").mkdir(parents=True, exist_ok=True)
    return env


@pytest.fixture(scope="module")
def demo_home(tmp_path_factory) -> Path:
    """One `recsys-platform demo` run on the embedded default, shared by the tests below."""
    home = tmp_path_factory.mktemp("demo")
    proc = subprocess.run([sys.executable, "-m", "recsys_platform.cli", "demo"], cwd=REPO, env=_env(home),
                          capture_output=True, text=True, timeout=600)
    (home / "demo.out").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    yield home
    from recsys_platform.vectors.embedded import stop_embedded

    stop_embedded(home / "pgdata")


def test_demo_leaves_one_folder_per_customer_with_exactly_the_sources_rows(demo_home):
    out = (demo_home / "demo.out").read_text()
    assert "all checks passed" in out
    assert "seeded sqlite:///" in out
    assert "recommender_model: version " in out
    assert "pgvector: item_emb 110 rows, user_emb 122 rows" in out
    assert "stream: 500 events -> delivered" in out and "(balanced: True)" in out
    assert "  known customer " in out and "  new customer " in out
    assert "recommendations hour " in out
    settings = Settings.build(home=str(demo_home))
    db = SourceDatabase(settings.source_url)
    store = ObjectStore.from_url(settings.lake_url)
    customers = [str(c) for c in db.customer_numbers()]
    assert lake.list_partition_keys(store, DATASET, "customerNumber") == sorted(customers)
    assert lake.read_partitions(store, DATASET, "customerNumber").num_rows == db.count_ratings()


def test_demo_is_rerunnable_and_fails_loudly_on_a_bad_source(demo_home, tmp_path):
    import shutil

    import sqlalchemy as sa

    home = tmp_path / "bad"
    shutil.copytree(demo_home, home, ignore=shutil.ignore_patterns("tmp", "dagster_home", "pgdata"))
    with sa.create_engine(f"sqlite:///{home / 'classicmodels.db'}").begin() as conn:
        conn.execute(sa.text("UPDATE ratings SET productRating = 0 WHERE rowid = 1"))
    proc = subprocess.run([sys.executable, "-m", "recsys_platform.cli", "demo"], cwd=REPO, env=_env(home),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 2
    assert "error: building ratings_ml_training failed" in proc.stderr
    assert "rating_range" in proc.stderr and "ratings.productRating" in proc.stderr


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _graphql(port: int, query: str) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        body = json.loads(resp.read())
    assert "errors" not in body, body
    return body["data"]


@pytest.mark.webserver
def test_the_ui_shows_the_batch_assets_checks_and_latest_materialization(demo_home):
    port = _free_port()
    log = open(demo_home / "webserver.log", "w")  # noqa: SIM115 (closed in finally, outlives the Popen)
    proc = subprocess.Popen(
        [sys.executable, "-m", "dagster_webserver", "-h", "127.0.0.1", "-p", str(port), "-w", str(REPO / "workspace.yaml")],
        cwd=REPO, env=_env(demo_home), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        preexec_fn=lambda: (signal.signal(signal.SIGINT, signal.SIG_DFL), signal.signal(signal.SIGTERM, signal.SIG_DFL)))
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if _graphql(port, "{ version }")["version"]:
                    break
            except OSError:
                pass
            assert proc.poll() is None, (demo_home / "webserver.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "webserver did not answer in 120 s"
            time.sleep(1)
        settings = Settings.build(home=str(demo_home))
        db = SourceDatabase(settings.source_url)
        partition = str(db.customer_numbers()[5])
        own_rows = db.count_ratings(Selection.of_customers([int(partition)]))
        data = _graphql(port, """{
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
        assert nodes["recommendations"]["groupName"] == "streaming"
        assert {"arrow", "parquet"} <= set(training["kinds"])  # the one-machine engine, by default
        assert training["owners"] == [{"team": "data-platform"}]
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
        assert {"preview", "rating_distribution", "dagster/column_schema", "partitions_written"} <= entries.keys()
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
