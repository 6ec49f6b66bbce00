"""The platform's configuration: profile URLs from the environment, validated once.

Read at definitions-load or CLI time (never at module import), so tests build `Settings` directly.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

from recsys_platform.errors import ConfigError

ENV_VARS = {
    "home": "RECSYS_HOME",
    "source_url": "RECSYS_SOURCE_URL",
    "lake_url": "RECSYS_LAKE_URL",
    "artifacts_url": "RECSYS_ARTIFACTS_URL",
    "recommendations_url": "RECSYS_RECOMMENDATIONS_URL",
    "vector_dsn": "RECSYS_VECTOR_DSN",
    "stream": "RECSYS_STREAM",
    "aws_endpoint_url": "AWS_ENDPOINT_URL",
    "jdbc_driver_jar": "RECSYS_JDBC_DRIVER_JAR",
    "hash_buckets": "RECSYS_HASH_BUCKETS",
    "spark_master": "RECSYS_SPARK_MASTER",
    "glue_job": "RECSYS_GLUE_JOB",
    "glue_launcher": "RECSYS_GLUE_LAUNCHER",
    "glue_arguments": "RECSYS_GLUE_ARGUMENTS",
    "pipes_bucket": "RECSYS_PIPES_BUCKET",
    "engine": "RECSYS_ENGINE",
    "stream_start": "RECSYS_STREAM_START",
    "stale_cron": "RECSYS_STALE_CRON",
    "dagster_pg_url": "RECSYS_DAGSTER_PG_URL",
}
DEFAULT_STALE_CRON = "0 3 * * *"
ENGINES = ("auto", "arrow", "spark")


def _validate_bucket_url(name: str, url: str) -> str:
    scheme = urlsplit(url).scheme
    if scheme not in ("file", "s3"):
        raise ConfigError(f"{ENV_VARS[name]} must be a file:// or s3:// URL, got {url!r}")
    if scheme == "s3" and not urlsplit(url).netloc:
        raise ConfigError(f"{ENV_VARS[name]} names no bucket: {url!r} (expected s3://bucket/prefix)")
    return url.rstrip("/")


def _cron(text: str) -> str:
    """Five cron fields, as Dagster schedules take them (Dagster checks the values at load)."""
    import re

    if not re.fullmatch(r"\s*(?:[0-9A-Za-z*/,?-]+\s+){4}[0-9A-Za-z*/,?-]+\s*", text):
        raise ConfigError(f"RECSYS_STALE_CRON must be a five-field cron expression such as '0 3 * * *', got {text!r}")
    return text


def _hour(text: str) -> str:
    """`YYYY-MM-DD` or `YYYY-MM-DD-HH`, validated; returned as given."""
    import datetime as dt

    if text:
        for fmt in ("%Y-%m-%d-%H", "%Y-%m-%d"):
            try:
                dt.datetime.strptime(text, fmt)
                return text
            except ValueError:
                pass
        raise ConfigError(f"RECSYS_STREAM_START must be YYYY-MM-DD or YYYY-MM-DD-HH (UTC), got {text!r}")
    return text


def _glue_launcher(value: str) -> str:
    if value not in ("aws", "local"):
        raise ConfigError(f"RECSYS_GLUE_LAUNCHER must be 'aws' or 'local', got {value!r}")
    return value


def _glue_arguments(text: str) -> str:
    """A JSON object of string arguments (`{"--RECSYS_SOURCE_JDBC_URL": "jdbc:mysql://..."}`)."""
    if not text:
        return ""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"RECSYS_GLUE_ARGUMENTS must be a JSON object: {e}") from None
    if not isinstance(value, dict) or not all(isinstance(k, str) and k.startswith("--") and isinstance(v, str)
                                              for k, v in value.items()):
        raise ConfigError('RECSYS_GLUE_ARGUMENTS must map "--NAME" to a string, as Glue job arguments do')
    return text


@dataclass(frozen=True)
class Settings:
    """Where every part of the platform lives. Empty values fall back to the embedded default."""

    home: str
    source_url: str
    lake_url: str
    artifacts_url: str
    recommendations_url: str
    vector_dsn: str = ""
    stream: str = "local"
    aws_endpoint_url: str = ""
    jdbc_driver_jar: str = ""
    hash_buckets: int = 0
    spark_master: str = "local[2]"
    glue_job: str = ""
    glue_launcher: str = "aws"  # "local": run the packaged Glue script as a local process (resources/local_glue.py)
    glue_arguments: str = ""    # the job's default arguments for the local launcher (JSON, as infra/ sets them)
    pipes_bucket: str = ""
    engine: str = "auto"
    stream_start: str = ""  # the first hour of `recommendations` (YYYY-MM-DD[-HH]); empty: where the data starts
    stale_cron: str = DEFAULT_STALE_CRON  # when the stale-partition schedule runs (UTC)
    dagster_pg_url: str = ""  # the Dagster instance's PostgreSQL (serve-dagster); empty: the embedded server

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

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: str) -> Settings:
        """Build from environment variables (or `env`), then apply explicit overrides."""
        env = os.environ if env is None else env
        raw = {field: env.get(var, "") for field, var in ENV_VARS.items()}
        raw.update({k: v for k, v in overrides.items() if v not in (None, "")})
        return cls.build(**raw)

    @classmethod
    def build(cls, home: str = "", **values: str) -> Settings:
        home_path = Path(home or "./.recsys").expanduser().resolve()
        home_uri = home_path.as_uri()
        buckets = {
            "lake_url": values.get("lake_url") or f"{home_uri}/lake",
            "artifacts_url": values.get("artifacts_url") or f"{home_uri}/ml-artifacts",
            "recommendations_url": values.get("recommendations_url") or f"{home_uri}/recommendations",
        }
        buckets = {k: _validate_bucket_url(k, v) for k, v in buckets.items()}
        source_url = values.get("source_url") or f"sqlite:///{home_path / 'classicmodels.db'}"
        stream = values.get("stream") or "local"
        if stream != "local" and not stream.startswith("kinesis://"):
            raise ConfigError(f"RECSYS_STREAM must be 'local' or 'kinesis://<stream-name>', got {stream!r}")
        raw_buckets = str(values.get("hash_buckets") or "0")
        try:
            hash_buckets = int(raw_buckets)
        except ValueError:
            raise ConfigError(f"RECSYS_HASH_BUCKETS must be a whole number, got {raw_buckets!r}") from None
        engine = (values.get("engine") or "auto").lower()
        if engine not in ENGINES:
            raise ConfigError(f"RECSYS_ENGINE must be one of {', '.join(ENGINES)}, got {engine!r}")
        if hash_buckets < 0:
            raise ConfigError(f"RECSYS_HASH_BUCKETS must be 0 (one folder per customer) or positive, got {hash_buckets}")
        return cls(
            home=str(home_path),
            source_url=source_url,
            stream=stream,
            vector_dsn=values.get("vector_dsn") or "",
            aws_endpoint_url=values.get("aws_endpoint_url") or "",
            jdbc_driver_jar=values.get("jdbc_driver_jar") or "",
            hash_buckets=hash_buckets,
            spark_master=values.get("spark_master") or "local[2]",
            glue_job=values.get("glue_job") or "",
            glue_launcher=_glue_launcher(values.get("glue_launcher") or "aws"),
            glue_arguments=_glue_arguments(values.get("glue_arguments") or ""),
            pipes_bucket=values.get("pipes_bucket") or "",
            engine=engine,
            stream_start=_hour(values.get("stream_start") or ""),
            stale_cron=_cron(values.get("stale_cron") or DEFAULT_STALE_CRON),
            dagster_pg_url=values.get("dagster_pg_url") or "",
            **buckets,
        )

    @property
    def pgdata(self) -> str:
        """The embedded PostgreSQL's data folder (used when no vector DSN is configured)."""
        return f"{self.home}/pgdata"

    def with_(self, **changes) -> Settings:
        return replace(self, **changes)
