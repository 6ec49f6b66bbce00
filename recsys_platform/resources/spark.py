"""Spark: dagster-pyspark's lazy session, in local mode by default, stopped after the run."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from dagster_pyspark import LazyPySparkResource

LOG4J_CONFIG = Path(__file__).with_name("log4j2.properties")


def cluster_config(py_files: str, endpoint_url: str = "") -> dict[str, str]:
    """What executors on a cluster need that local mode hides (its Python workers inherit the
    driver's environment and working directory):

    - the platform's code: `py_files`, the package zip `recsys-platform package` builds for Glue
      (`deploy.packaging.code_zip`), shipped with `spark.submit.pyFiles` (executors import
      `recsys_platform` to write partitions);
    - storage settings: with an S3-compatible endpoint (MinIO, moto), the endpoint and the
      driver's credentials as executor environment (Spark redacts *SECRET*/*TOKEN* in its UI);
      on AWS nothing: executors use their node's own credential chain (instance profile, EMR/Glue
      role), and the driver's keys never travel.
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
        conf["spark.executorEnv.AWS_DEFAULT_REGION"] = session.region_name or "us-east-1"
    return conf


def spark_config(master: str = "local[2]", jars: str = "", extra: dict | None = None,
                 py_files: str = "", endpoint_url: str = "") -> dict[str, str]:
    """A small-footprint Spark config; `jars` adds e.g. a JDBC driver. On a cluster master
    (`spark://`, `yarn`, `k8s://`), `cluster_config` ships the code and storage settings."""
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
    if not master.startswith("local"):
        conf.update(cluster_config(py_files, endpoint_url))
    conf.update(extra or {})
    return conf


class SparkResource(LazyPySparkResource):
    """A SparkSession created on first use and stopped when the run ends.

    `stop_after_run=False` keeps one session for the whole process (tests share one to avoid a
    6-second start per test). Spark's getOrCreate silently reuses a live session and ignores new
    static config, so one process must use one configuration.
    """

    stop_after_run: bool = True

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self.stop_after_run and self._spark_session is not None:
            self._spark_session.stop()
            self._spark_session = None
