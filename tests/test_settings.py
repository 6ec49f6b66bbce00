import pytest

from recsys_platform.errors import ConfigError
from recsys_platform.settings import Settings


def test_embedded_default_puts_everything_under_recsys_home(tmp_path):
    s = Settings.from_env(env={"RECSYS_HOME": str(tmp_path)})
    assert s.source_url == f"sqlite:///{tmp_path}/classicmodels.db"
    assert s.lake_url == f"file://{tmp_path}/lake"
    assert s.artifacts_url == f"file://{tmp_path}/ml-artifacts"
    assert s.recommendations_url == f"file://{tmp_path}/recommendations"
    assert (s.stream, s.vector_dsn, s.hash_buckets) == ("local", "", 0)


def test_aws_profile_is_configuration_only(tmp_path):
    s = Settings.from_env(env={
        "RECSYS_HOME": str(tmp_path), "RECSYS_SOURCE_URL": "mysql+pymysql://u:p@db:3306/classicmodels",
        "RECSYS_LAKE_URL": "s3://lake/prefix/", "RECSYS_STREAM": "kinesis://events", "RECSYS_HASH_BUCKETS": "64"})
    assert s.lake_url == "s3://lake/prefix"
    assert s.stream == "kinesis://events"
    assert s.hash_buckets == 64


@pytest.mark.parametrize(("var", "value", "message"), [
    ("RECSYS_LAKE_URL", "ftp://x", "RECSYS_LAKE_URL must be a file:// or s3:// URL"),
    ("RECSYS_ARTIFACTS_URL", "s3://", "RECSYS_ARTIFACTS_URL names no bucket"),
    ("RECSYS_STREAM", "kafka://x", "RECSYS_STREAM must be 'local' or 'kinesis://"),
    ("RECSYS_HASH_BUCKETS", "many", "RECSYS_HASH_BUCKETS must be a whole number"),
    ("RECSYS_HASH_BUCKETS", "-3", "RECSYS_HASH_BUCKETS must be 0"),
    ("RECSYS_GLUE_LAUNCHER", "emr", "RECSYS_GLUE_LAUNCHER must be 'aws' or 'local'"),
    ("RECSYS_GLUE_ARGUMENTS", "{nope", "RECSYS_GLUE_ARGUMENTS must be a JSON object"),
    ("RECSYS_GLUE_ARGUMENTS", '{"RECSYS_LAKE_URL": "s3://x"}', 'must map "--NAME" to a string'),
    ("RECSYS_STALE_CRON", "every minute", "RECSYS_STALE_CRON must be a five-field cron expression"),
    ("RECSYS_STALE_CRON", "0 3 * *", "RECSYS_STALE_CRON must be a five-field cron expression"),
])
def test_bad_setting_names_the_variable(tmp_path, var, value, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env={"RECSYS_HOME": str(tmp_path), var: value})
