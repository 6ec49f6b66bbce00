"""The Spark engine's Python workers run the platform's own interpreter.

Run as `<env>/bin/dagster …` (a virtualenv used without activating it, or any installed
environment) with a PATH whose `python3` lacks the platform's packages, Spark used to start its
local workers with that `python3`, and every build failed in the worker. Here PATH holds only
/usr/bin and /bin, whose python3 (Debian's) has no pyspark.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg

from recsys_platform.assets.batch.partitions import CUSTOMERS
from recsys_platform.batch.source import SourceDatabase
from recsys_platform.storage import lake
from recsys_platform.storage.object_store import ObjectStore
from tests.conftest import REPO

BARE_PATH = "/usr/bin:/bin"


def test_path_python_lacks_the_platform():
    """The premise: the python3 this PATH finds cannot run a Spark worker of the platform."""
    bare = subprocess.run(["python3", "-c", "import pyspark"], env={"PATH": BARE_PATH}, capture_output=True)
    assert bare.returncode != 0


def test_the_installed_dagster_builds_with_spark_without_the_environment_on_path(settings, tmp_path):
    dagster = Path(sys.executable).parent / "dagster"
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    keys = [str(c) for c in SourceDatabase(settings.source_url).customer_numbers()[:2]]
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        instance.add_dynamic_partitions(CUSTOMERS.name, keys)
    env = {"PATH": BARE_PATH, "HOME": os.environ.get("HOME", "/root"), "DAGSTER_HOME": str(dagster_home),
           "RECSYS_HOME": settings.home, "RECSYS_ENGINE": "spark"}
    run = subprocess.run([str(dagster), "asset", "materialize", "-m", "recsys_platform.definitions",
                          "--select", "ratings_ml_training", "--partition", keys[0]],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "PythonException" not in run.stderr
    written = lake.read_partitions(ObjectStore.from_url(settings.lake_url), "ratings_ml_training",
                                   "customerNumber", [keys[0]])
    assert written.num_rows > 0
