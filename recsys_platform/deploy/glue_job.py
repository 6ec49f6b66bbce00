"""AWS Glue entry point for `ratings_ml_training`: the same Spark engine build as Spark local.

Shipped by `recsys-platform package` as dist/glue/ratings_ml_training.py, with the package as
--extra-py-files. Launched by Dagster through dagster-aws's PipesGlueClient: Dagster Pipes
carries the partition keys in, and the row counts back as materialization metadata.

Its configuration is the platform's one `Settings`, read from the job's arguments, which carry
the variables' own names (`--RECSYS_LAKE_URL s3://…`, `--RECSYS_HASH_BUCKETS 0`,
`--RECSYS_SOURCE_JDBC_URL jdbc:mysql://…`, `--RECSYS_SOURCE_SECRET_ARN …`, `--RECSYS_JDBC_DRIVER …`:
see the README's configuration table). infra/ gives the driver `com.mysql.cj.jdbc.Driver`, MySQL
Connector/J, which Glue 4.0 has on its classpath (it backs Glue's own MySQL connections), so it
passes no --extra-jars for it; a run elsewhere names its driver and passes its jar (the local
launcher: Debian's MariaDB driver).
"""

from __future__ import annotations

import sys


def job_arguments(argv: list[str]) -> dict[str, str]:
    """`--NAME value` pairs of a Glue script's command line (a flag without a value maps to "")."""
    out, key = {}, None
    for token in argv[1:]:
        if token.startswith("--"):
            key = token[2:]
            out[key] = ""
        elif key:
            out[key] = token
            key = None
    return out


def main(argv: list[str]) -> int:
    from dagster_pipes import (
        PipesCliArgsParamsLoader,
        PipesS3ContextLoader,
        PipesS3MessageWriter,
        open_dagster_pipes,
    )
    from pyspark.sql import SparkSession

    from recsys_platform import wiring
    from recsys_platform.batch.contract import Layout
    from recsys_platform.batch.engines.spark import build
    from recsys_platform.batch.source import SourceDatabase
    from recsys_platform.settings import VARIABLES, Settings

    arguments = job_arguments(argv)  # Glue's own (JOB_NAME, the Pipes bootstrap...) are not settings
    settings = Settings.from_env({v.name: arguments[v.name] for v in VARIABLES.values() if v.name in arguments})
    db = SourceDatabase(wiring.source_url(settings))
    layout = Layout(settings.hash_buckets)
    s3 = wiring.aws_client(settings, "s3")
    with open_dagster_pipes(params_loader=PipesCliArgsParamsLoader(),
                            context_loader=PipesS3ContextLoader(client=s3),
                            message_writer=PipesS3MessageWriter(client=s3)) as pipes:
        keys = pipes.extras.get("partition_keys") or layout.partition_keys(db.customer_numbers())
        spark = SparkSession.builder.getOrCreate()
        result = build(spark, db, wiring.store(settings, settings.lake_url), keys, layout=layout,
                       use_jdbc=True, log=pipes.log.info, driver=settings.jdbc_driver)
        pipes.report_asset_materialization(metadata={
            "dagster/row_count": result.rows, "partitions_written": result.written,
            "partitions_removed": result.removed, "extraction": result.extraction,
            "jdbc_driver": settings.jdbc_driver})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
