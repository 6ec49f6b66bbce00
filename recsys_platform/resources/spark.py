"""Spark: dagster-pyspark's lazy session, in local mode by default, stopped after the run."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from dagster_pyspark import LazyPySparkResource

LOG4J_CONFIG = Path(__file__).with_name("log4j2.properties")


def spark_config(master: str = "local[2]", jars: str = "", extra: dict | None = None) -> dict[str, str]:
    """A small-footprint Spark config for one machine; `jars` adds e.g. a JDBC driver."""
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
