"""`recsys-platform ecs-instance`: the Dagster instance of the ECS deployment, rendered from the
settings the orchestration module puts on its containers (the apply test launches a run with it)."""

import yaml

from recsys_platform.cli import main
from recsys_platform.deploy.dagster_instance import MODEL_QUEUE, QUEUE_KEY, ecs_instance_yaml
from recsys_platform.settings import Settings

ECS = {"RECSYS_DAGSTER_PG_HOST": "recsys-vector-db.abc.us-east-1.rds.amazonaws.com:5432",
       "RECSYS_ECS_CLUSTER": "recsys-dagster",
       "RECSYS_ECS_RUN_TASK_DEFINITION": "arn:aws:ecs:us-east-1:123456789012:task-definition/recsys-dagster-run",
       "RECSYS_ECS_SUBNETS": "subnet-0a, subnet-0b", "RECSYS_ECS_SECURITY_GROUPS": "sg-0c"}


def test_the_ecs_instance_launches_runs_as_tasks_and_names_its_credentials_never_holds_them(tmp_path):
    text = ecs_instance_yaml(Settings.from_env({**ECS, "RECSYS_HOME": str(tmp_path)}))
    config = yaml.safe_load(text)
    launcher = config["run_launcher"]
    assert (launcher["module"], launcher["class"]) == ("dagster_aws.ecs", "EcsRunLauncher")
    assert launcher["config"] == {
        "task_definition": ECS["RECSYS_ECS_RUN_TASK_DEFINITION"], "container_name": "run", "secrets_tag": None,
        "use_current_ecs_task_config": False,
        "run_task_kwargs": {"cluster": "recsys-dagster", "launchType": "FARGATE", "networkConfiguration": {
            "awsvpcConfiguration": {"subnets": ["subnet-0a", "subnet-0b"], "securityGroups": ["sg-0c"],
                                    "assignPublicIp": "DISABLED"}}}}
    db = config["storage"]["postgres"]["postgres_db"]
    assert db == {"username": {"env": "RECSYS_DAGSTER_PG_USER"}, "password": {"env": "RECSYS_DAGSTER_PG_PASSWORD"},
                  "hostname": "recsys-vector-db.abc.us-east-1.rds.amazonaws.com", "port": 5432, "db_name": "dagster",
                  "params": {"sslmode": "require"}, "scheme": "postgresql+psycopg2"}, \
        "TLS to RDS; the password only as a variable's name"
    limits = config["run_coordinator"]["config"]["tag_concurrency_limits"]
    assert {"key": QUEUE_KEY, "value": MODEL_QUEUE, "limit": 1} in limits
    assert config["run_retries"] == {"enabled": True, "max_retries": 2}


def test_a_unix_socket_directory_is_libpqs_host_parameter(tmp_path):
    settings = Settings.from_env({**ECS, "RECSYS_HOME": str(tmp_path), "RECSYS_DAGSTER_PG_HOST": "/run/postgresql",
                                  "RECSYS_DAGSTER_PG_SSLMODE": "disable"})
    db = yaml.safe_load(ecs_instance_yaml(settings))["storage"]["postgres"]["postgres_db"]
    assert (db["hostname"], db["params"]) == ("localhost", {"sslmode": "disable", "host": "/run/postgresql"})


def test_the_command_prints_it_or_names_what_is_missing(tmp_path, capsys, monkeypatch):
    for name, value in ECS.items():
        monkeypatch.setenv(name, value)
    assert main(["--home", str(tmp_path), "ecs-instance", "--out", "-"]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["run_launcher"]["class"] == "EcsRunLauncher"
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    assert main(["--home", str(tmp_path), "ecs-instance"]) == 0  # no injected password: nothing to create
    assert (tmp_path / "home" / "dagster.yaml").read_text() == ecs_instance_yaml(Settings.from_env())
    monkeypatch.delenv("RECSYS_ECS_CLUSTER")
    monkeypatch.setenv("RECSYS_ECS_SUBNETS", "")
    assert main(["--home", str(tmp_path), "ecs-instance", "--out", "-"]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "the ECS instance needs RECSYS_ECS_CLUSTER, RECSYS_ECS_SUBNETS (infra/'s outputs" in line
