"""The one configuration: every variable declared once, parsed once, named in every error."""

import re

import pytest

from recsys_platform.errors import ConfigError
from recsys_platform.settings import VARIABLES, Settings, readme_table
from tests.conftest import REPO


def test_embedded_default_puts_everything_under_recsys_home(tmp_path):
    s = Settings.from_env(env={"RECSYS_HOME": str(tmp_path)})
    assert s.source_url == f"sqlite:///{tmp_path}/classicmodels.db"
    assert s.lake_url == f"file://{tmp_path}/lake"
    assert s.artifacts_url == f"file://{tmp_path}/ml-artifacts"
    assert s.recommendations_url == f"file://{tmp_path}/recommendations"
    assert (s.stream, s.vector_dsn, s.hash_buckets, s.top_k, s.batch_engine) == ("local", "", 0, 5, "arrow")


def test_aws_profile_is_configuration_only(tmp_path):
    s = Settings.from_env(env={
        "RECSYS_HOME": str(tmp_path), "RECSYS_SOURCE_URL": "mysql+pymysql://u:p@db:3306/classicmodels",
        "RECSYS_LAKE_URL": "s3://lake/prefix/", "RECSYS_STREAM": "kinesis://events", "RECSYS_HASH_BUCKETS": "64",
        "RECSYS_VECTOR_SECRET_ARN": "arn:aws:secretsmanager:eu-west-1:1:secret:x", "RECSYS_VECTOR_HOST": "db:5432",
        "RECSYS_INFERENCE_FUNCTION": "recsys-inference", "RECSYS_TOP_K": "7", "AWS_REGION": "eu-west-1"})
    assert s.lake_url == "s3://lake/prefix"
    assert (s.stream, s.hash_buckets, s.top_k) == ("kinesis://events", 64, 7)
    assert (s.vector_host, s.vector_db, s.inference_function, s.aws_region) == (
        "db:5432", "recsys", "recsys-inference", "eu-west-1")


@pytest.mark.parametrize(("var", "value", "message"), [
    ("RECSYS_LAKE_URL", "ftp://x", "RECSYS_LAKE_URL must be a file:// or s3:// URL"),
    ("RECSYS_ARTIFACTS_URL", "s3://", "RECSYS_ARTIFACTS_URL names no bucket"),
    ("RECSYS_STREAM", "kafka://x", "RECSYS_STREAM must be 'local' or 'kinesis://"),
    ("RECSYS_HASH_BUCKETS", "many", "RECSYS_HASH_BUCKETS must be a whole number"),
    ("RECSYS_HASH_BUCKETS", "-3", "RECSYS_HASH_BUCKETS must be 0 or more (0: one folder per customer)"),
    ("RECSYS_TOP_K", "0", "RECSYS_TOP_K must be between 1 and 100"),
    ("RECSYS_ENGINE", "sprak", "RECSYS_ENGINE must be one of auto, arrow, spark"),
    ("RECSYS_GLUE_LAUNCHER", "emr", "RECSYS_GLUE_LAUNCHER must be one of aws, local"),
    ("RECSYS_GLUE_ARGUMENTS", "{nope", "RECSYS_GLUE_ARGUMENTS must be a JSON object"),
    ("RECSYS_GLUE_ARGUMENTS", '{"RECSYS_LAKE_URL": "s3://x"}', 'must map "--NAME" to a string'),
    ("RECSYS_STALE_CRON", "every minute", "RECSYS_STALE_CRON must be a five-field cron expression"),
    ("RECSYS_STALE_CRON", "0 3 * *", "RECSYS_STALE_CRON must be a five-field cron expression"),
    ("RECSYS_STREAM_START", "March", "RECSYS_STREAM_START must be YYYY-MM-DD or YYYY-MM-DD-HH"),
    ("AWS_ENDPOINT_URL", "localhost:5055", "AWS_ENDPOINT_URL must be an http:// or https:// endpoint"),
    ("RECSYS_SOURCE_URL", "mysql://app:pw@db:3306/cm",
     "RECSYS_SOURCE_URL uses mysql://, whose driver the platform does not ship: write mysql+pymysql://db:3306/cm"),
    ("RECSYS_SOURCE_URL", "db.example/classicmodels", "RECSYS_SOURCE_URL is not a database URL"),
    ("RECSYS_SOURCE_URL", "oracle://db/cm", "RECSYS_SOURCE_URL must start with one of sqlite://"),
])
def test_bad_setting_names_the_variable(tmp_path, var, value, message):
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        Settings.from_env(env={"RECSYS_HOME": str(tmp_path), var: value})
    assert "pw" not in str(err.value), "a password never appears in an error"


def test_a_command_reads_only_the_variables_it_uses(tmp_path):
    env = {"RECSYS_HOME": str(tmp_path), "RECSYS_ENGINE": "sprak"}
    assert Settings.from_env(env, using=("home", "source_url")).engine == "auto"
    with pytest.raises(ConfigError, match="RECSYS_ENGINE"):
        Settings.from_env(env)


def test_a_child_process_environment_gives_back_the_same_settings(tmp_path):
    s = Settings.from_env(env={"RECSYS_HOME": str(tmp_path), "RECSYS_STREAM_START": "2026-03-01-05",
                               "RECSYS_GLUE_ARGUMENTS": '{"--RECSYS_JDBC_DRIVER": "x"}', "RECSYS_HASH_BUCKETS": "8"})
    assert Settings.from_env(env=s.environment()) == s


def test_the_readme_configuration_table_is_the_settings_table():
    """README's table is `python -m recsys_platform.settings` verbatim: same variables, defaults, meanings."""
    readme = (REPO / "README.md").read_text()
    assert readme_table() in readme, "regenerate the README table with: python -m recsys_platform.settings"
    documented = set(re.findall(r"^\| `([A-Z_]+)` \|", readme, flags=re.M))
    assert documented == {v.name for v in VARIABLES.values()}
    assert [f for f in Settings.__dataclass_fields__] == list(VARIABLES), "one field per variable, in table order"
