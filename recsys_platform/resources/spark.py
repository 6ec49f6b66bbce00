"""Spark: dagster-pyspark's lazy session, in local mode by default, stopped after the run."""

from __future__ import annotations

import dagster as dg
from dagster_pyspark import LazyPySparkResource

from recsys_platform.batch.engines.spark_config import (
    cluster_config,
    is_local,
    local_workers_run_this_interpreter,
)


class SparkResource(LazyPySparkResource):
    """A SparkSession created on first use and stopped when the run ends.

    `spark_config` is the local part (`spark_config(master, jars)`, no I/O). On a cluster master,
    the first use also packages the platform's code into `code_dir` and ships it with the
    storage settings (`cluster_config`): definitions load without building or reading anything.

    `stop_after_run=False` keeps one session for the whole process (tests share one to avoid a
    6-second start per test). Spark's getOrCreate silently reuses a live session and ignores new
    static config, so one process must use one configuration.
    """

    stop_after_run: bool = True
    code_dir: str = ""       # where a cluster's code zip is built (deploy.packaging.code_zip)
    endpoint_url: str = ""   # an S3-compatible endpoint the executors must reach too
    region: str = ""

    def _init_session(self) -> None:
        if self._spark_session is None:
            if is_local(self.spark_config.get("spark.master", "local")):
                local_workers_run_this_interpreter()
            else:
                from recsys_platform.deploy.packaging import code_zip

                py_files = str(code_zip(self.code_dir))
                self.spark_config.update(cluster_config(py_files, self.endpoint_url, self.region))
        super()._init_session()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self.stop_after_run and self._spark_session is not None:
            self._spark_session.stop()
            self._spark_session = None
