"""The platform's one configuration: every variable declared once, parsed and validated once.

`Settings.from_env` is called by the entry points only (the CLI, `definitions.py`, the two Lambda
adapters, the Glue script); everything below them takes the values it needs as arguments, so no
module reads the environment and tests build `Settings` directly. `VARIABLES` is the single
declaration: each field's variable, its default as the README shows it, its meaning and its
parser. The README's configuration table is this table (`python -m recsys_platform.settings`
prints it; a test keeps the two equal).

A command may read only the variables it uses (`from_env(using=...)`): a typo in
`RECSYS_ENGINE` must not stop `seed`, which builds nothing. Parsing does no I/O: secrets named
here (an ARN) are read where they are used (`wiring`), never at load.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

from recsys_platform.errors import ConfigError
from recsys_platform.vectors.rules import RuleError, Rules

ENGINES = ("auto", "arrow", "spark")
SOURCE_SCHEMES = ("sqlite", "mysql+pymysql", "mariadb+pymysql")


@dataclass(frozen=True)
class Variable:
    """One environment variable: its name, its default as the README shows it, what it means, and
    its parser. A default in backticks (`` `local` ``) is the value an unset variable takes; any
    other text says what an empty value means (the parser, or `Settings.build`, gives it)."""

    name: str
    default: str
    meaning: str
    parse: Callable[[str, str], object] = lambda name, text: text  # noqa: E731 - (variable, text) -> value

    @property
    def value_when_unset(self) -> str:
        literal = re.fullmatch(r"`([^`$]*)`", self.default)
        return literal.group(1) if literal else ""


# -- parsers: each names its variable in the error, and says what would be right -------------------
def _bucket_url(name: str, url: str) -> str:
    scheme = urlsplit(url).scheme
    if scheme not in ("file", "s3"):
        raise ConfigError(f"{name} must be a file:// or s3:// URL, got {url!r}")
    if scheme == "s3" and not urlsplit(url).netloc:
        raise ConfigError(f"{name} names no bucket: {url!r} (expected s3://bucket/prefix)")
    return url.rstrip("/")


def _source_url(name: str, url: str) -> str:
    """A SQLAlchemy URL of a dialect the platform ships a driver for."""
    match = re.match(r"^([A-Za-z0-9+_.-]+)://", url)
    if not match:
        raise ConfigError(f"{name} is not a database URL: expected sqlite:///path/to.db or "
                          "mysql+pymysql://user:password@host:3306/classicmodels")
    scheme = match.group(1).lower()
    if scheme in ("mysql", "mariadb", "mysql+mysqldb", "mysql+mysqlconnector"):
        raise ConfigError(f"{name} uses {scheme}://, whose driver the platform does not ship: write "
                          f"mysql+pymysql://{url.split('://', 1)[1].split('@')[-1]} (with the user and password)")
    if scheme not in SOURCE_SCHEMES:
        raise ConfigError(f"{name} must start with one of {', '.join(s + '://' for s in SOURCE_SCHEMES)}, "
                          f"got {scheme}://")
    return url


def _stream(name: str, text: str) -> str:
    if text != "local" and not (text.startswith("kinesis://") and len(text) > len("kinesis://")):
        raise ConfigError(f"{name} must be 'local' or 'kinesis://<stream-name>', got {text!r}")
    return text


def _http_url(name: str, text: str) -> str:
    if text and urlsplit(text).scheme not in ("http", "https"):
        raise ConfigError(f"{name} must be an http:// or https:// endpoint, got {text!r}")
    return text.rstrip("/")


def _whole(low: int, high: int | None = None, hint: str = "") -> Callable[[str, str], int]:
    def parse(name: str, text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise ConfigError(f"{name} must be a whole number, got {text!r}") from None
        if value < low or (high is not None and value > high):
            bounds = f"between {low} and {high}" if high is not None else f"{low} or more"
            raise ConfigError(f"{name} must be {bounds}{hint}, got {value}")
        return value

    return parse


def _choice(*allowed: str) -> Callable[[str, str], str]:
    def parse(name: str, text: str) -> str:
        value = text.lower()
        if value not in allowed:
            raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {text!r}")
        return value

    return parse


def _cron(name: str, text: str) -> str:
    """Five cron fields, as Dagster schedules take them (Dagster checks the values at load)."""
    if not re.fullmatch(r"\s*(?:[0-9A-Za-z*/,?-]+\s+){4}[0-9A-Za-z*/,?-]+\s*", text):
        raise ConfigError(f"{name} must be a five-field cron expression such as '0 3 * * *', got {text!r}")
    return text


def _hour(name: str, text: str) -> dt.datetime:
    """`YYYY-MM-DD` or `YYYY-MM-DD-HH` (UTC) as the start of that hour."""
    for fmt in ("%Y-%m-%d-%H", "%Y-%m-%d"):
        try:
            return dt.datetime.strptime(text, fmt).replace(tzinfo=dt.timezone.utc)
        except ValueError:
            pass
    raise ConfigError(f"{name} must be YYYY-MM-DD or YYYY-MM-DD-HH (UTC), got {text!r}")


def _rules(name: str, text: str) -> Rules:
    """The serving rules' defaults: a JSON object of `vectors.rules.Rules` fields; empty: the
    protective defaults (nothing out of stock)."""
    if not text:
        return Rules()
    try:
        return Rules.from_json(json.loads(text))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{name} must be a JSON object: {e}") from None
    except RuleError as e:
        raise ConfigError(f"{name}: {e}") from None


def _glue_arguments(name: str, text: str) -> dict[str, str]:
    """A JSON object of string arguments (`{"--RECSYS_SOURCE_JDBC_URL": "jdbc:mysql://..."}`)."""
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{name} must be a JSON object: {e}") from None
    if not isinstance(value, dict) or not all(isinstance(k, str) and k.startswith("--") and isinstance(v, str)
                                              for k, v in value.items()):
        raise ConfigError(f'{name} must map "--NAME" to a string, as Glue job arguments do')
    return value


def _names(name: str, text: str) -> tuple[str, ...]:
    """Comma-separated AWS ids (`subnet-1,subnet-2`), empty for none."""
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    if any(not re.fullmatch(r"[A-Za-z0-9:/._-]+", n) for n in names):
        raise ConfigError(f"{name} must be comma-separated ids such as subnet-0abc,subnet-0def, got {text!r}")
    return names


# The README's configuration table, row by row (field name -> its variable).
VARIABLES: dict[str, Variable] = {
    "home": Variable("RECSYS_HOME", "`./.recsys`", "embedded state: SQLite source, bucket folders, "
                     "embedded PostgreSQL, Dagster instance"),
    "source_url": Variable("RECSYS_SOURCE_URL", "`sqlite:///$RECSYS_HOME/classicmodels.db`",
                           "SQLAlchemy URL of the source: `sqlite:///…` or `mysql+pymysql://user:password@host/db`",
                           _source_url),
    "lake_url": Variable("RECSYS_LAKE_URL", "`file://$RECSYS_HOME/lake`",
                         "data lake, `file://…` or `s3://bucket/prefix`", _bucket_url),
    "artifacts_url": Variable("RECSYS_ARTIFACTS_URL", "`file://$RECSYS_HOME/ml-artifacts`",
                              "model artifacts bucket", _bucket_url),
    "recommendations_url": Variable("RECSYS_RECOMMENDATIONS_URL", "`file://$RECSYS_HOME/recommendations`",
                                    "recommendations bucket (the stream's delivery target)", _bucket_url),
    "vector_dsn": Variable("RECSYS_VECTOR_DSN", "empty: embedded PostgreSQL",
                           "PostgreSQL + pgvector DSN (`postgresql://user:password@host/db`)"),
    "vector_secret_arn": Variable("RECSYS_VECTOR_SECRET_ARN", "empty",
                                  "instead of a DSN: the vector database's Secrets Manager secret (username, "
                                  "password), read when first connecting; with `RECSYS_VECTOR_HOST` (the Lambdas' form)"),
    "vector_host": Variable("RECSYS_VECTOR_HOST", "empty", "with `RECSYS_VECTOR_SECRET_ARN`: `host[:port]`"),
    "vector_db": Variable("RECSYS_VECTOR_DB", "`recsys`", "with `RECSYS_VECTOR_SECRET_ARN`: the database name"),
    "stream": Variable("RECSYS_STREAM", "`local`", "`local` or `kinesis://<stream-name>`", _stream),
    "aws_endpoint_url": Variable("AWS_ENDPOINT_URL", "empty: AWS",
                                 "an S3/Kinesis/Lambda/Glue-compatible endpoint (tests, MinIO)", _http_url),
    "aws_region": Variable("AWS_REGION", "empty: boto3's chain, else `us-east-1`", "the AWS region of every client"),
    "engine": Variable("RECSYS_ENGINE", "`auto`",
                       "the batch engine: `arrow` (connectorx + pyarrow, one machine, no JVM), `spark` (PySpark: local, "
                       "a cluster, EMR), `auto` (Spark for a non-local `RECSYS_SPARK_MASTER`, Arrow otherwise); both "
                       "write byte-identical files", _choice(*ENGINES)),
    "jdbc_driver_jar": Variable("RECSYS_JDBC_DRIVER_JAR", "empty",
                                "with the Spark engine: a MariaDB JDBC jar, to extract with Spark JDBC (parallel, split "
                                "on `customerNumber`) instead of SQLAlchemy→Arrow"),
    "jdbc_driver": Variable("RECSYS_JDBC_DRIVER", "empty: `org.mariadb.jdbc.Driver`",
                            "the JDBC driver class of Spark JDBC extraction (infra/ gives the Glue job "
                            "`com.mysql.cj.jdbc.Driver`, which Glue ships)"),
    "hash_buckets": Variable("RECSYS_HASH_BUCKETS", "`0`",
                             "`N > 0`: lay the training data out as `customer_bucket=<k>/` (k = customerNumber mod N, "
                             "static partitions) instead of one folder per customer; use past ~10,000 customers",
                             _whole(0, hint=" (0: one folder per customer)")),
    "spark_master": Variable("RECSYS_SPARK_MASTER", "`local[2]`",
                             "Spark master URL; local masters run their Python workers with the platform's own "
                             "interpreter; on a cluster the platform ships its code (`spark.submit.pyFiles`) and, for "
                             "an S3-compatible endpoint, the storage settings to the executors (docs/deploy.md)"),
    "glue_job": Variable("RECSYS_GLUE_JOB", "empty: no Glue",
                         "the AWS profile: build `ratings_ml_training` with this Glue job through Dagster Pipes"),
    "pipes_bucket": Variable("RECSYS_PIPES_BUCKET", "empty",
                             "the bucket for Dagster Pipes context and messages (with `RECSYS_GLUE_JOB`)"),
    "glue_launcher": Variable("RECSYS_GLUE_LAUNCHER", "`aws`",
                              "`local`: run the packaged Glue script as a local process (a rehearsal of the Glue path; "
                              "only the launch differs)", _choice("aws", "local")),
    "glue_arguments": Variable("RECSYS_GLUE_ARGUMENTS", "empty",
                               "the Glue job's default arguments for the local launcher, as JSON "
                               '(`{"--RECSYS_SOURCE_JDBC_URL": "jdbc:mysql://…", …}`)', _glue_arguments),
    "source_jdbc_url": Variable("RECSYS_SOURCE_JDBC_URL", "empty",
                                "the Glue job's source: `jdbc:mysql://host:3306/classicmodels` (with "
                                "`RECSYS_SOURCE_SECRET_ARN`; a Glue job argument)"),
    "source_secret_arn": Variable("RECSYS_SOURCE_SECRET_ARN", "empty",
                                  "the Glue job's source credentials: a Secrets Manager secret (username, password)"),
    "stream_start": Variable("RECSYS_STREAM_START", "`2026-01-01`",
                             "the first hourly partition of `recommendations` (`YYYY-MM-DD[-HH]`, UTC)", _hour),
    "stale_cron": Variable("RECSYS_STALE_CRON", "`0 3 * * *`",
                           "when the stale-partition schedule compares source versions and rebuilds (five cron "
                           "fields, UTC)", _cron),
    "dagster_pg_url": Variable("RECSYS_DAGSTER_PG_URL", "empty",
                               "the production Dagster instance's PostgreSQL (`serve-dagster`); empty: the embedded "
                               "server's `dagster` database"),
    "dagster_pg_host": Variable("RECSYS_DAGSTER_PG_HOST", "empty",
                                "on ECS (`recsys-platform ecs-instance`): the instance's PostgreSQL, `host[:port]` (or a Unix "
                                "socket directory); "
                                "its user and password come from `RECSYS_DAGSTER_PG_USER` and "
                                "`RECSYS_DAGSTER_PG_PASSWORD`, which ECS injects from the RDS secret and "
                                "`dagster.yaml` names, never holds"),
    "dagster_pg_sslmode": Variable("RECSYS_DAGSTER_PG_SSLMODE", "`require`",
                                   "on ECS: libpq's `sslmode` towards that database (RDS forces TLS: keep `require` "
                                   "or `verify-full`)", _choice("disable", "allow", "prefer", "require", "verify-ca",
                                                                "verify-full")),
    "ecs_cluster": Variable("RECSYS_ECS_CLUSTER", "empty",
                            "on ECS: the cluster `EcsRunLauncher` starts each run in (infra/ output `ecs_cluster`)"),
    "ecs_run_task_definition": Variable("RECSYS_ECS_RUN_TASK_DEFINITION", "empty",
                                        "on ECS: the task definition of every run (infra/ output "
                                        "`ecs_run_task_definition`)"),
    "ecs_subnets": Variable("RECSYS_ECS_SUBNETS", "empty",
                            "on ECS: the private subnets of the run tasks, comma-separated", _names),
    "ecs_security_groups": Variable("RECSYS_ECS_SECURITY_GROUPS", "empty",
                                    "on ECS: the security groups of the run tasks, comma-separated", _names),
    "top_k": Variable("RECSYS_TOP_K", "`5`", "how many items each stream answer recommends (and offers as similar)",
                      _whole(1, 100)),
    "rules": Variable("RECSYS_RULES", "empty: nothing out of stock",
                      "the serving rules' defaults, a JSON object (`{\"exclude_bought\": true, \"product_lines\": [...], "
                      "\"exclude_product_lines\": [...], \"min_price\": 10, \"max_price\": 100, \"in_stock_only\": "
                      "true}`); an event's `rules` and the routes' parameters change them per request", _rules),
    "catalog_cron": Variable("RECSYS_CATALOG_CRON", "`0 * * * *`",
                             "when `item_attributes` (stock, lines, prices) and `customer_purchases` are refreshed from "
                             "the source (five cron fields, UTC)", _cron),
    "retrain_interactions": Variable("RECSYS_RETRAIN_INTERACTIONS", "`5000`",
                                     "`retrain_sensor` trains a new model once this many interactions were ingested "
                                     "since the last training (besides a change of the training data); `0`: never "
                                     "for interactions", _whole(0)),
    "retrain_min_minutes": Variable("RECSYS_RETRAIN_MIN_MINUTES", "`60`",
                                    "`retrain_sensor` trains at most once in this many minutes", _whole(0)),
    "inference_function": Variable("RECSYS_INFERENCE_FUNCTION", "empty: in-process",
                                   "the stream transformation Lambda calls this model inference Lambda "
                                   "(`lambda:Invoke`); empty: inference runs in the same process"),
}
@dataclass(frozen=True)
class Settings:
    """Where every part of the platform lives; built by `from_env` or `build`, never by hand."""

    home: str
    source_url: str
    lake_url: str
    artifacts_url: str
    recommendations_url: str
    vector_dsn: str
    vector_secret_arn: str
    vector_host: str
    vector_db: str
    stream: str
    aws_endpoint_url: str
    aws_region: str
    engine: str
    jdbc_driver_jar: str
    jdbc_driver: str
    hash_buckets: int
    spark_master: str
    glue_job: str
    pipes_bucket: str
    glue_launcher: str
    glue_arguments: dict[str, str]
    source_jdbc_url: str
    source_secret_arn: str
    stream_start: dt.datetime
    stale_cron: str
    dagster_pg_url: str
    dagster_pg_host: str
    dagster_pg_sslmode: str
    ecs_cluster: str
    ecs_run_task_definition: str
    ecs_subnets: tuple[str, ...]
    ecs_security_groups: tuple[str, ...]
    top_k: int
    rules: Rules
    catalog_cron: str
    retrain_interactions: int
    retrain_min_minutes: int
    inference_function: str

    # -- construction -----------------------------------------------------------------------------
    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, using: Collection[str] | None = None,
                 **overrides: str | None) -> Settings:
        """From environment variables (or `env`), then explicit overrides (a CLI flag beats its
        variable). `using`: the only fields read from `env` (the rest take their defaults), for a
        command that reads a few."""
        env = os.environ if env is None else env
        raw = {field: env.get(var.name, "") for field, var in VARIABLES.items() if using is None or field in using}
        raw.update({k: v for k, v in overrides.items() if v not in (None, "")})
        return cls.build(**raw)

    @classmethod
    def build(cls, **values: object) -> Settings:
        """From field names and their texts (an empty or missing value takes the default)."""
        unknown = set(values) - set(VARIABLES)
        if unknown:
            raise TypeError(f"unknown settings {sorted(unknown)}")
        given = {field: "" if values.get(field) is None else str(values[field]) for field in VARIABLES}
        text = {field: given[field] or var.value_when_unset for field, var in VARIABLES.items()}
        home = Path(text["home"]).expanduser().resolve()
        home_uri = home.as_uri()
        text["source_url"] = text["source_url"] or f"sqlite:///{home / 'classicmodels.db'}"
        for field, folder in (("lake_url", "lake"), ("artifacts_url", "ml-artifacts"),
                              ("recommendations_url", "recommendations")):
            text[field] = text[field] or f"{home_uri}/{folder}"
        parsed = {field: var.parse(var.name, text[field]) for field, var in VARIABLES.items()}
        parsed["home"] = str(home)
        return cls(**parsed)

    def with_(self, **changes) -> Settings:
        """A copy with some fields changed (values already parsed: strings, ints, datetimes)."""
        return replace(self, **changes)

    # -- derived values (one rule each) ----------------------------------------------------------
    @property
    def batch_engine(self) -> str:
        """What builds the training data: "glue" (RECSYS_GLUE_JOB), "spark" or "arrow".
        `auto` picks Spark for a non-local Spark master, Arrow on one machine."""
        if self.glue_job:
            return "glue"
        if self.engine != "auto":
            return self.engine
        return "arrow" if self.spark_master.startswith("local") else "spark"

    @property
    def source_is_default(self) -> bool:
        """True when the source is the embedded SQLite under RECSYS_HOME (the only one the demo seeds)."""
        return self.source_url == f"sqlite:///{Path(self.home) / 'classicmodels.db'}"

    @property
    def pgdata(self) -> str:
        """The embedded PostgreSQL's data folder (used when no vector database is configured)."""
        return f"{self.home}/pgdata"

    @property
    def dagster_home(self) -> str:
        """The Dagster instance of the embedded profile (the demo's runs, `make ui`)."""
        return f"{self.home}/dagster_home"

    def environment(self) -> dict[str, str]:
        """The variables that give a child process (the Dagster webserver, daemon, code server)
        these same settings: the set ones, as texts the parsers read back."""
        out = {}
        for field, var in VARIABLES.items():
            value = getattr(self, field)
            if isinstance(value, dt.datetime):
                value = value.strftime("%Y-%m-%d-%H")
            elif isinstance(value, Rules):
                value = json.dumps(value.to_json()) if value != Rules() else ""
            elif isinstance(value, dict):
                value = json.dumps(value) if value else ""
            elif isinstance(value, tuple):
                value = ",".join(value)
            if value not in ("", None):
                out[var.name] = str(value)
        return out


def readme_table() -> str:
    """The README's configuration table (`python -m recsys_platform.settings` prints it)."""
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    rows += [f"| `{v.name}` | {v.default} | {v.meaning} |" for v in VARIABLES.values()]
    return "\n".join(rows)


if __name__ == "__main__":
    print(readme_table())
