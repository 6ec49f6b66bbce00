"""The Spark engine's session configuration: small-footprint defaults, the Python the workers run,
and what executors on a cluster need. No Spark import: built before a session exists.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

LOG4J_CONFIG = Path(__file__).with_name("log4j2.properties")


def is_local(master: str) -> bool:
    return master.startswith("local")


def local_workers_run_this_interpreter() -> None:
    """Before a local session starts: its Python workers run this process's interpreter.

    A PySpark driver starts local workers with $PYSPARK_PYTHON, else `python3` from PATH (it
    reads no Spark config for this), which is not the virtualenv's when the platform runs as
    `.venv/bin/dagster …` without activating it: every Python function then fails in the worker.
    An explicit PYSPARK_PYTHON is kept. On a cluster the executors' Python is the cluster's.
    """
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)


def spark_config(master: str = "local[2]", jars: str = "", extra: dict | None = None) -> dict[str, str]:
    """A small-footprint Spark config; `jars` adds e.g. a JDBC driver."""
    conf = {
        "spark.master": master,
        "spark.app.name": "recsys-platform",
        "spark.ui.enabled": "false",
        "spark.sql.shuffle.partitions": "8",
        "spark.sql.session.timeZone": "UTC",
        "spark.driver.memory": "2g",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.ui.showConsoleProgress": "false",
        "spark.driver.extraJavaOptions": f"-Dlog4j.configurationFile={LOG4J_CONFIG}",
        # Keep Spark's scratch files out of the working directory.
        "spark.sql.warehouse.dir": "/tmp/recsys-spark-warehouse",
    }
    if jars:
        conf["spark.jars"] = jars
    conf.update(extra or {})
    return conf


def cluster_config(py_files: str, endpoint_url: str = "", region: str = "") -> dict[str, str]:
    """What executors on a cluster need that local mode hides (its Python workers inherit the
    driver's environment and working directory):

    - the platform's code: `py_files`, the package zip `recsys-platform package` builds for Glue
      (`deploy.packaging.code_zip`), shipped with `spark.submit.pyFiles` (executors import
      `recsys_platform` to write partitions);
    - storage settings: with an S3-compatible endpoint (MinIO, moto), the endpoint and the
      driver's credentials as executor environment (Spark redacts *SECRET*/*TOKEN* in its UI);
      on AWS nothing: executors use their node's own credential chain (instance profile, EMR/Glue
      role), and the driver's keys never travel.

    Reads the driver's credentials (boto3's chain): called when a session starts, never when
    definitions load.
    """
    if not py_files:
        raise ValueError("a Spark cluster's executors need the platform's code: pass py_files "
                         "(deploy.packaging.code_zip builds it)")
    conf = {"spark.submit.pyFiles": py_files}
    if endpoint_url:
        import boto3

        conf["spark.executorEnv.AWS_ENDPOINT_URL"] = endpoint_url
        session = boto3.Session()
        credentials = session.get_credentials()
        if credentials is not None:
            frozen = credentials.get_frozen_credentials()
            conf["spark.executorEnv.AWS_ACCESS_KEY_ID"] = frozen.access_key
            conf["spark.executorEnv.AWS_SECRET_ACCESS_KEY"] = frozen.secret_key
            if frozen.token:
                conf["spark.executorEnv.AWS_SESSION_TOKEN"] = frozen.token
        conf["spark.executorEnv.AWS_DEFAULT_REGION"] = region or session.region_name or "us-east-1"
    return conf
