"""Loading the definitions builds objects and nothing else: no network, no file, no bucket listed.

An S3 outage, an unreachable cluster or a missing Glue package must fail runs, never the code
location (the UI, the daemon and every run load it).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import dagster as dg

from recsys_platform.definitions import build_definitions
from recsys_platform.settings import Settings
from tests.conftest import REPO

# Every remote part unreachable (port 9 on loopback: nothing listens), and a home that does not exist.
UNREACHABLE = {
    "RECSYS_SOURCE_URL": "mysql+pymysql://app:pw@127.0.0.1:9/classicmodels",
    "RECSYS_LAKE_URL": "s3://lake/recsys", "RECSYS_ARTIFACTS_URL": "s3://artifacts",
    "RECSYS_RECOMMENDATIONS_URL": "s3://recommendations", "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
    "RECSYS_VECTOR_DSN": "postgresql://app:pw@127.0.0.1:9/recsys", "RECSYS_STREAM": "kinesis://activity",
    "RECSYS_SPARK_MASTER": "spark://127.0.0.1:9", "RECSYS_GLUE_JOB": "recsys-ratings-ml-training",
    "RECSYS_GLUE_LAUNCHER": "local", "RECSYS_PIPES_BUCKET": "pipes",
}


def test_loading_the_definitions_opens_no_connection_and_writes_nothing(tmp_path, monkeypatch):
    home = tmp_path / "home"
    settings = Settings.from_env({**UNREACHABLE, "RECSYS_HOME": str(home)})
    attempts = []

    def refuse(self, address):
        attempts.append(address)
        raise OSError(f"loading the definitions tried to connect to {address}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    defs = build_definitions(settings)
    dg.Definitions.validate_loadable(defs)
    assert {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()} == {
        "classicmodels_ratings", "ratings_ml_training", "recommender_model", "item_emb", "user_emb",
        "item_attributes", "customer_purchases", "customer_recommendations", "recommendations", "interactions",
        "online_metrics"}
    assert not attempts
    assert not home.exists(), "nothing written under RECSYS_HOME"


def test_the_code_location_loads_with_every_store_unreachable(tmp_path):
    """What the UI and the daemon do, from the command line: a clean exit, fast, nothing written.
    (Listing an unreachable bucket alone took 10 s of retries before it failed the load.)"""
    home = tmp_path / "home"
    env = {**os.environ, **UNREACHABLE, "RECSYS_HOME": str(home), "DAGSTER_HOME": str(tmp_path / "dagster"),
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    (tmp_path / "dagster").mkdir()
    started = time.monotonic()
    run = subprocess.run([sys.executable, "-m", "dagster", "definitions", "validate", "-m",
                          "recsys_platform.definitions"], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=120)
    elapsed = time.monotonic() - started
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert not home.exists()
    # Imports dominate (~5 s here); one S3 retry cycle alone would add 10 s.
    assert elapsed < 30, f"loading took {elapsed:.1f} s"
