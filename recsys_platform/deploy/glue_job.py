"""AWS Glue entry point for `ratings_ml_training`: the same `core.batch.build` as Spark local.

Shipped by `recsys-platform package` as dist/glue/ratings_ml_training.py, with the package as
--extra-py-files. Launched by Dagster through dagster-aws's PipesGlueClient: Dagster Pipes
carries the partition keys in, and the row counts back as materialization metadata.

Job arguments: --RECSYS_LAKE_URL, --RECSYS_SOURCE_JDBC_URL, --RECSYS_SOURCE_SECRET_ARN,
optional --RECSYS_HASH_BUCKETS and --RECSYS_JDBC_DRIVER: the JDBC driver class Spark reads the
source with. Default `com.mysql.cj.jdbc.Driver`, MySQL Connector/J, which Glue 4.0 has on its
classpath (it backs Glue's own MySQL connections), so infra/ passes no --extra-jars for it; a
run elsewhere names its driver and passes its jar (the local launcher: Debian's MariaDB driver).
"""

from __future__ import annotations

import json
import sys


def _args(argv: list[str]) -> dict[str, str]:
    out, key = {}, None
    for token in argv[1:]:
        if token.startswith("--"):
            key = token[2:]
            out[key] = ""
        elif key:
            out[key] = token
            key = None
    return out


def source_url(jdbc_url: str, secret: dict) -> str:
    """jdbc:mysql://host:port/db + {username, password} -> a SQLAlchemy URL."""
    from sqlalchemy.engine import URL

    rest = jdbc_url.split("://", 1)[1]
    hostport, _, database = rest.partition("/")
    host, _, port = hostport.partition(":")
    return URL.create("mysql+pymysql", username=secret["username"], password=secret["password"], host=host,
                      port=int(port or 3306), database=database.split("?")[0]).render_as_string(hide_password=False)


def main(argv: list[str]) -> int:
    import boto3
    from dagster_pipes import (
        PipesCliArgsParamsLoader,
        PipesS3ContextLoader,
        PipesS3MessageWriter,
        open_dagster_pipes,
    )
    from pyspark.sql import SparkSession

    from recsys_platform.batch.contract import Layout
    from recsys_platform.batch.engines.spark import MYSQL_DRIVER, build
    from recsys_platform.batch.source import SourceDatabase
    from recsys_platform.storage.object_store import ObjectStore

    args = _args(argv)
    secret = json.loads(boto3.client("secretsmanager").get_secret_value(
        SecretId=args["RECSYS_SOURCE_SECRET_ARN"])["SecretString"])
    db = SourceDatabase(source_url(args["RECSYS_SOURCE_JDBC_URL"], secret))
    layout = Layout(int(args.get("RECSYS_HASH_BUCKETS") or 0))
    with open_dagster_pipes(params_loader=PipesCliArgsParamsLoader(),
                            context_loader=PipesS3ContextLoader(client=boto3.client("s3")),
                            message_writer=PipesS3MessageWriter(client=boto3.client("s3"))) as pipes:
        keys = pipes.extras.get("partition_keys") or layout.partition_keys(db.customer_numbers())
        spark = SparkSession.builder.getOrCreate()
        result = build(spark, db, ObjectStore.from_url(args["RECSYS_LAKE_URL"]), keys, layout=layout,
                       use_jdbc=True, log=pipes.log.info, driver=args.get("RECSYS_JDBC_DRIVER") or MYSQL_DRIVER)
        pipes.report_asset_materialization(metadata={
            "dagster/row_count": result.rows, "partitions_written": result.written,
            "partitions_removed": result.removed, "extraction": result.extraction,
            "jdbc_driver": args.get("RECSYS_JDBC_DRIVER") or MYSQL_DRIVER})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
