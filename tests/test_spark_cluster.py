"""The Spark engine on a real standalone cluster: a master and a worker in their own JVMs, started
with the pyspark package's own launcher, the worker in a clean environment like a real node's
(no RECSYS_*/AWS_* variables, a Python without this project), the lake on the S3-compatible
endpoint. Local mode hides what a cluster needs (shipping the code, the storage settings); the
build there must equal the local build byte for byte."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import textwrap
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from recsys_platform.batch.engines.spark import build
from recsys_platform.batch.seed import seed
from recsys_platform.batch.source import SourceDatabase
from recsys_platform.storage.object_store import ObjectStore
from tests.browser import free_port


def _node_env(tmp: Path) -> dict[str, str]:
    """A worker node's environment: no platform or AWS settings, and a Python that has the
    dependencies but not this project (`-S`: site-packages on the path, but no .pth file runs,
    so the editable install of recsys_platform is invisible)."""
    import pyspark

    python = tmp / "python-without-the-project"
    python.write_text(f'#!/bin/sh\nexec {sys.executable} -S "$@"\n')
    python.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RECSYS_", "AWS_", "PYTHON", "PYSPARK"))}
    env.update({"SPARK_HOME": os.path.dirname(pyspark.__file__), "SPARK_LOCAL_IP": "127.0.0.1",
                "SPARK_LOG_DIR": str(tmp / "logs"), "SPARK_WORKER_DIR": str(tmp / "work"),
                "PYTHONPATH": sysconfig.get_paths()["purelib"], "PYSPARK_PYTHON": str(python)})
    return env


@pytest.fixture(scope="module")
def spark_cluster(tmp_path_factory):
    import pyspark

    tmp = tmp_path_factory.mktemp("cluster")
    env = _node_env(tmp)
    spark_class = os.path.join(os.path.dirname(pyspark.__file__), "bin", "spark-class")
    port = free_port()
    master_url = f"spark://127.0.0.1:{port}"
    logs = open(tmp / "cluster.log", "w")  # noqa: SIM115 - the daemons write it for the module's lifetime
    master = subprocess.Popen([spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                               "--port", str(port), "--webui-port", str(free_port())],
                              env=env, stdout=logs, stderr=subprocess.STDOUT, cwd=tmp)
    worker = subprocess.Popen([spark_class, "org.apache.spark.deploy.worker.Worker", "--host", "127.0.0.1",
                               "--cores", "2", "--memory", "2g", "--webui-port", str(free_port()), master_url],
                              env=env, stdout=logs, stderr=subprocess.STDOUT, cwd=tmp)
    deadline = time.monotonic() + 90
    while "Successfully registered with master" not in (tmp / "cluster.log").read_text():
        if time.monotonic() > deadline or master.poll() is not None or worker.poll() is not None:
            pytest.fail("the Spark cluster did not come up:\n" + (tmp / "cluster.log").read_text()[-3000:])
        time.sleep(0.5)
    yield master_url, env["PYSPARK_PYTHON"], tmp
    for proc in (worker, master):
        proc.terminate()
        proc.wait(timeout=30)
    logs.close()


DRIVER = textwrap.dedent("""
    import sys
    from pyspark.sql import SparkSession
    from recsys_platform.batch.engines.spark import build
    from recsys_platform.batch.source import SourceDatabase
    from recsys_platform.deploy.packaging import code_zip
    from recsys_platform.batch.engines.spark_config import cluster_config, spark_config
    from recsys_platform.storage.object_store import ObjectStore

    master, source, lake, endpoint, code = sys.argv[1:6]
    builder = SparkSession.builder
    for key, value in {**spark_config(master), **cluster_config(str(code_zip(code)), endpoint)}.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    db = SourceDatabase(source)
    keys = [str(c) for c in db.customer_numbers()]
    result = build(spark, db, ObjectStore.from_url(lake, endpoint_url=endpoint), keys)
    print("ROWS", result.rows, "WRITTEN", result.written)
    spark.stop()
""")


@pytest.mark.production
@pytest.mark.s3
def test_the_spark_engine_on_a_standalone_cluster_equals_the_local_build(spark, spark_cluster, s3_bucket, s3_endpoint,
                                                                        tmp_path):
    master_url, python, cluster_tmp = spark_cluster
    node = _node_env(tmp_path)
    hidden = subprocess.run([python, "-c", "import pyarrow, boto3; import recsys_platform"], env=node,
                            capture_output=True, text=True, cwd=tmp_path)  # not the repository: '' is on the path
    assert "No module named 'recsys_platform'" in hidden.stderr, "the node's Python has the dependencies only"
    source = f"sqlite:///{tmp_path / 'classicmodels.db'}"
    seed(sa.create_engine(source))
    db = SourceDatabase(source)
    keys = [str(c) for c in db.customer_numbers()]
    local = ObjectStore.from_url(f"s3://{s3_bucket}/local", endpoint_url=s3_endpoint)
    build(spark, db, local, keys)

    driver_env = {**os.environ, "PYSPARK_PYTHON": python}  # the executors' Python: the node's
    run = subprocess.run([sys.executable, "-c", DRIVER, master_url, source, f"s3://{s3_bucket}/cluster",
                          s3_endpoint, str(tmp_path / "code")], env=driver_env, capture_output=True, text=True,
                         timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    assert f"ROWS {2397}" in run.stdout
    executors = list((cluster_tmp / "work").rglob("stderr"))
    assert executors, "the work ran in the worker's executors, not in the driver"

    cluster = ObjectStore.from_url(f"s3://{s3_bucket}/cluster", endpoint_url=s3_endpoint)
    mine = {o.key: cluster.read_bytes(o.key) for o in cluster.list()}
    theirs = {o.key: local.read_bytes(o.key) for o in local.list()}
    assert len(mine) == len(keys) and mine == theirs, "byte for byte"


@pytest.mark.production
@pytest.mark.s3
def test_the_asset_on_a_cluster_master_packages_its_code_when_the_run_needs_it(
        spark, spark_cluster, settings, s3_bucket, s3_endpoint, tmp_path):
    """RECSYS_SPARK_MASTER on a cluster: the definitions load without building anything, and the
    run's first use of Spark packages the platform's code and ships it, with the storage settings,
    to the executors; the partition written there equals the local build's."""
    import dagster as dg

    from recsys_platform.assets.batch.partitions import CUSTOMERS

    master_url, python, _ = spark_cluster
    db = SourceDatabase(settings.source_url)
    key = str(db.customer_numbers()[3])
    local = ObjectStore.from_url(f"s3://{s3_bucket}/local", endpoint_url=s3_endpoint)
    build(spark, db, local, [key])
    dagster_home = tmp_path / "dagster_home"
    dagster_home.mkdir()
    (dagster_home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        instance.add_dynamic_partitions(CUSTOMERS.name, [key])
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "RECSYS_HOME": settings.home,
           "RECSYS_SPARK_MASTER": master_url, "RECSYS_LAKE_URL": f"s3://{s3_bucket}/dagster",
           "AWS_ENDPOINT_URL": s3_endpoint, "PYSPARK_PYTHON": python}  # the executors' Python: the node's
    code = Path(settings.home) / "spark-code"
    run = subprocess.run([str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "-m",
                          "recsys_platform.definitions", "--select", "ratings_ml_training", "--partition", key],
                         env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-4000:]
    assert (code / "glue" / "recsys_platform.zip").exists(), "packaged by the run, for the executors"
    cluster = ObjectStore.from_url(f"s3://{s3_bucket}/dagster", endpoint_url=s3_endpoint)
    mine = {o.key: cluster.read_bytes(o.key) for o in cluster.list()}
    theirs = {o.key: local.read_bytes(o.key) for o in local.list()}
    assert len(mine) == 1 and mine == theirs, "byte for byte"
