"""infra/ planned, applied and destroyed against an AWS API (moto's server), its outputs driving
the platform: the Glue job Terraform defined runs the script Terraform uploaded into the bucket
Terraform created, and events go through the stream it created.

What differs from AWS is listed in docs/deploy.md: the provider's endpoints (a test-only override
file, tests/infra_moto/), one bucket-policy stand-in, and the Glue *launch* (a local process).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import urllib.request
from pathlib import Path

import boto3
import dagster as dg
import pytest
import sqlalchemy as sa

from recsys_platform.assets.batch.partitions import CUSTOMERS
from recsys_platform.batch.engines.spark import MARIADB_DRIVER
from recsys_platform.batch.seed import seed
from recsys_platform.batch.source import SourceDatabase
from recsys_platform.definitions import build_definitions
from recsys_platform.settings import Settings
from recsys_platform.storage.object_store import ObjectStore
from recsys_platform.streaming.stream import Stream
from tests.conftest import REPO, _service
from tests.terraform import terraform, terraform_env

pytestmark = [pytest.mark.production, pytest.mark.mariadb, pytest.mark.s3]

INFRA = REPO / "infra"
TEST_ONLY = REPO / "tests" / "infra_moto"
REGION = "us-east-1"


@pytest.fixture
def aws_endpoint() -> str:
    """The second moto server of scripts/services.sh, reset: a fresh, empty account per apply."""
    url = _service("RECSYS_TEST_AWS_ENDPOINT", "the moto server Terraform applies to")
    urllib.request.urlopen(urllib.request.Request(f"{url}/moto-api/reset", method="POST"), timeout=30).read()
    return url


def _client(service: str, endpoint: str):
    return boto3.client(service, endpoint_url=endpoint, region_name=REGION)


def _existing_network(endpoint: str, mysql_url: str) -> dict:
    """What infra/ expects to exist already: a VPC (DNS hostnames on) with two private subnets and their route table,
    the source database's security group, and the source's secret (here: MariaDB's credentials)."""
    ec2 = _client("ec2", endpoint)
    vpc = ec2.create_vpc(CidrBlock="10.42.0.0/16")["Vpc"]["VpcId"]
    # Interface endpoints with private DNS and the Cloud Map namespace need the VPC's DNS names.
    ec2.modify_vpc_attribute(VpcId=vpc, EnableDnsHostnames={"Value": True})
    subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.42.{i}.0/24", AvailabilityZone=f"{REGION}{zone}")
               ["Subnet"]["SubnetId"] for i, zone in ((1, "a"), (2, "b"))]
    route_table = ec2.create_route_table(VpcId=vpc)["RouteTable"]["RouteTableId"]
    source_group = ec2.create_security_group(GroupName="classicmodels", Description="the MySQL source",
                                             VpcId=vpc)["GroupId"]
    url = sa.engine.make_url(mysql_url)
    secret = _client("secretsmanager", endpoint).create_secret(
        Name="recsys/source", SecretString=json.dumps({"username": url.username, "password": url.password}))
    certificate = _client("acm", endpoint).request_certificate(DomainName="dagster.recsys.internal")
    return {"vpc_id": vpc, "private_subnet_ids": subnets, "private_route_table_ids": [route_table],
            "source_security_group_id": source_group, "source_secret_arn": secret["ARN"],
            "source_jdbc_url": f"jdbc:mysql://{url.host}:{url.port}/{url.database}",
            "webserver_certificate_arn": certificate["CertificateArn"], "webserver_allowed_cidrs": ["10.42.0.0/16"]}


def _empty_bucket(s3, bucket: str) -> None:
    """Versioned buckets keep every version: remove them all, as an operator would before destroy."""
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket):
        doomed = [{"Key": v["Key"], "VersionId": v["VersionId"]}
                  for v in page.get("Versions", []) + page.get("DeleteMarkers", [])]
        if doomed:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": doomed})


def _run_partitions(settings: Settings, keys: list[str]):
    defs = build_definitions(settings)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(CUSTOMERS.name, keys)
        return defs.resolve_job_def("ratings_ml_training_job").execute_in_process(
            instance=instance, raise_on_error=False,
            tags={"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]})


def _launch_a_run_on_ecs(outputs: dict, endpoint: str, tmp_path: Path) -> None:
    """The instance `recsys-platform ecs-instance` renders from the orchestration module's outputs
    (what its containers carry), over a local PostgreSQL (the RDS endpoint is moto's), launches a
    run through the daemon's queue and EcsRunLauncher; the emulated ECS recorded the task with the
    run task definition, the run worker's command, the private subnets and the tasks' group."""
    import os
    import subprocess
    import sys

    from recsys_platform.deploy.dagster_instance import ecs_instance_yaml
    from recsys_platform.vectors.embedded import embedded_dsn, stop_embedded

    ecs, ec2 = _client("ecs", endpoint), _client("ec2", endpoint)
    environment = outputs["dagster_instance_environment"]
    for service in ("webserver", "daemon", "code"):  # every Dagster container carries these settings
        family = f"recsys-dagster-{service}"
        (container,) = ecs.describe_task_definition(taskDefinition=family)["taskDefinition"]["containerDefinitions"]
        assert {e["name"]: e["value"] for e in container["environment"]}.items() >= environment.items(), family
        assert container["command"][-1].startswith("recsys-platform ecs-instance >/dev/null && exec ")
        assert {s["name"] for s in container["secrets"]} == {"RECSYS_DAGSTER_PG_USER", "RECSYS_DAGSTER_PG_PASSWORD"}
    services = ecs.describe_services(cluster=outputs["ecs_cluster"], services=["webserver", "daemon", "code"])
    assert {s["serviceName"]: s["launchType"] for s in services["services"]} == dict.fromkeys(
        ["webserver", "daemon", "code"], "FARGATE")
    balancer = _client("elbv2", endpoint).describe_load_balancers(Names=["recsys-dagster-web"])["LoadBalancers"][0]
    assert balancer["Scheme"] == "internal" and outputs["dagster_url"] == f"https://{balancer['DNSName']}"

    pgdata = Path(tempfile.mkdtemp(prefix="recsys-ecs-instance-")) / "pgdata"  # outside basetemp (see conftest)
    try:
        import psycopg

        socket_dir = psycopg.conninfo.conninfo_to_dict(embedded_dsn(pgdata))["host"]
        home = tmp_path / "dagster-ecs"
        # The outputs as the containers carry them, with what ECS injects; only the database is
        # this machine's (and without TLS).
        env = {**os.environ, **environment, "RECSYS_DAGSTER_PG_HOST": socket_dir, "RECSYS_DAGSTER_PG_SSLMODE": "disable",
               "RECSYS_DAGSTER_PG_USER": "postgres", "RECSYS_DAGSTER_PG_PASSWORD": "", "DAGSTER_HOME": str(home),
               "RECSYS_HOME": str(tmp_path / "ecs-home"), "AWS_ENDPOINT_URL": endpoint, "AWS_REGION": REGION,
               "AWS_DEFAULT_REGION": REGION, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
        first = subprocess.run([sys.executable, "-m", "recsys_platform.cli", "ecs-instance"], env=env,
                               capture_output=True, text=True, timeout=120, cwd=REPO)
        assert first.returncode == 0, first.stderr[-2000:]
        assert "created the database of the Dagster instance" in first.stdout and (home / "dagster.yaml").exists()
        again = subprocess.run([sys.executable, "-m", "recsys_platform.cli", "ecs-instance"], env=env,
                               capture_output=True, text=True, timeout=120, cwd=REPO)
        assert again.returncode == 0 and "created" not in again.stdout, "the next start finds it"
        settings = Settings.from_env(env)
        assert (home / "dagster.yaml").read_text() == ecs_instance_yaml(settings)
        code = ["-w", str(REPO / "workspace.yaml")]
        launch = subprocess.run([sys.executable, "-m", "dagster", "job", "launch", "-j", "item_attributes_job", *code],
                                env=env, capture_output=True, text=True, timeout=300, cwd=REPO)
        assert launch.returncode == 0, launch.stdout[-2000:] + launch.stderr[-3000:]
        daemon_bin = Path(sys.executable).parent / "dagster-daemon"
        daemon = subprocess.Popen([str(daemon_bin), "run", *code], env=env, cwd=REPO, stderr=subprocess.STDOUT,
                                  stdout=open(tmp_path / "daemon.log", "w"), start_new_session=True)  # noqa: SIM115
        try:
            deadline, tasks = time.monotonic() + 120, []
            while not tasks and time.monotonic() < deadline:
                time.sleep(2)
                tasks = ecs.list_tasks(cluster=outputs["ecs_cluster"])["taskArns"]
        finally:
            os.killpg(daemon.pid, 15)
            daemon.wait(timeout=30)
        assert tasks, "no task started; daemon log:\n" + (tmp_path / "daemon.log").read_text()[-4000:]
        (task,) = ecs.describe_tasks(cluster=outputs["ecs_cluster"], tasks=tasks)["tasks"]
        assert task["taskDefinitionArn"].startswith(outputs["ecs_run_task_definition"] + ":")
        (override,) = task["overrides"]["containerOverrides"]
        assert override["name"] == "run" and override["command"][:3] == ["dagster", "api", "execute_run"]
        details = {d["name"]: d["value"] for d in task["attachments"][0]["details"]}
        assert details["subnetId"] in settings.ecs_subnets
        (eni,) = ec2.describe_network_interfaces(NetworkInterfaceIds=[details["networkInterfaceId"]])["NetworkInterfaces"]
        assert [g["GroupId"] for g in eni["Groups"]] == list(settings.ecs_security_groups)
        from unittest import mock

        with mock.patch.dict(os.environ, env), dg.DagsterInstance.from_config(str(home)) as instance:
            (run,) = instance.get_runs()
            assert run.job_name == "item_attributes_job" and run.tags["ecs/task_arn"] == task["taskArn"]
        ecs.stop_task(cluster=outputs["ecs_cluster"], task=task["taskArn"])  # (the emulation never ends it)
    finally:
        stop_embedded(pgdata)
        shutil.rmtree(pgdata.parent, ignore_errors=True)


def test_infra_applies_drives_the_platform_and_destroys(tmp_path, package_dir, aws_endpoint, mysql_url, jdbc_jar):
    seed(sa.create_engine(mysql_url))
    work = tmp_path / "infra"
    shutil.copytree(INFRA, work, ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*"))
    shutil.copy(TEST_ONLY / "test_endpoint.tf", work)
    shutil.copy(TEST_ONLY / "test_provider_override.tf", work)
    shutil.copy(TEST_ONLY / "buckets_policy_override.tf", work / "modules" / "buckets")
    variables = {**_existing_network(aws_endpoint, mysql_url), "test_aws_endpoint": aws_endpoint,
                 "package_dir": str(package_dir), "db_deletion_protection": False,
                 "lambda_image_uri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/recsys-lambda:v1",
                 "platform_image_uri": "123456789012.dkr.ecr.us-east-1.amazonaws.com/recsys-platform:v1",
                 "serving_rules": json.dumps({"exclude_bought": True, "max_price": 150})}
    (work / "test.auto.tfvars.json").write_text(json.dumps(variables))
    env = {**terraform_env(tmp_path), "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
    timings: dict[str, float] = {}

    def step(name: str, args: list[str], timeout: int = 600):
        started = time.monotonic()
        done = terraform(args, work, env, timeout=timeout)
        timings[name] = round(time.monotonic() - started, 1)
        assert done.returncode == 0, f"terraform {name} failed:\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
        return done

    step("init", ["init", "-backend=false", "-input=false", "-no-color"])
    bad = terraform(["plan", "-input=false", "-no-color", "-var", "serving_rules=in stock only"], work, env)
    assert bad.returncode != 0 and "The serving_rules value must be a JSON object" in bad.stderr, bad.stderr[-2000:]
    step("plan", ["plan", "-input=false", "-no-color", "-out=tfplan"])
    changes = json.loads(step("show", ["show", "-json", "tfplan"]).stdout)["resource_changes"]
    planned = [c for c in changes if c["mode"] == "managed"]
    creates = {c["address"] for c in planned if c["change"]["actions"] == ["create"]}
    assert len(creates) == len(planned) >= 60, "a fresh account: every resource is created, none changed"
    s3 = _client("s3", aws_endpoint)
    applied, outputs = False, {}
    try:
        apply = step("apply", ["apply", "-input=false", "-no-color", "-auto-approve", "tfplan"], timeout=900)
        (tmp_path / "apply.log").write_text(apply.stdout)
        applied = True
        started = time.monotonic()
        outputs = {k: v["value"] for k, v in json.loads(step("output", ["output", "-json"]).stdout).items()}
        lake_bucket = outputs["lake_url"].removeprefix("s3://")

        # -- the outputs, as a deployment's environment, are the platform's settings ------------
        glue = _client("glue", aws_endpoint)
        job = glue.get_job(JobName=outputs["glue_job_name"])["Job"]
        uploaded = s3.get_object(Bucket=lake_bucket, Key=job["Command"]["ScriptLocation"].split("/", 3)[3])
        assert uploaded["Body"].read() == (package_dir / "glue" / "ratings_ml_training.py").read_bytes()
        # The job's own default arguments as Terraform set them; only the driver differs, because
        # the source here is MariaDB (Glue's classpath has MySQL Connector/J; docs/deploy.md).
        arguments = {**job["DefaultArguments"], "--RECSYS_JDBC_DRIVER": MARIADB_DRIVER, "--extra-jars": jdbc_jar}
        assert arguments["--RECSYS_LAKE_URL"] == outputs["lake_url"]
        settings = Settings.from_env({
            "RECSYS_HOME": str(tmp_path / "home"), "RECSYS_SOURCE_URL": mysql_url,
            "RECSYS_LAKE_URL": outputs["lake_url"], "RECSYS_ARTIFACTS_URL": outputs["artifacts_url"],
            "RECSYS_RECOMMENDATIONS_URL": outputs["recommendations_url"], "RECSYS_STREAM": outputs["stream"],
            "RECSYS_GLUE_JOB": outputs["glue_job_name"], "RECSYS_PIPES_BUCKET": lake_bucket,
            "AWS_ENDPOINT_URL": aws_endpoint, "RECSYS_GLUE_LAUNCHER": "local",
            "RECSYS_GLUE_ARGUMENTS": json.dumps(arguments)})
        assert settings.batch_engine == "glue"

        # -- the Glue job builds three partitions into the lake bucket, reporting through Pipes ----
        keys = [str(c) for c in SourceDatabase(mysql_url).customer_numbers()][:3]
        result = _run_partitions(settings, keys)
        assert result.success, [e.message for e in result.all_events if e.is_failure][:3]
        meta = result.asset_materializations_for_node("ratings_ml_training")[0].metadata
        assert meta["extraction"].value == "spark-jdbc" and meta["AWS Glue Job Run ID"].value.startswith("jr_")
        lake = ObjectStore.from_url(settings.lake_url, endpoint_url=aws_endpoint)
        assert {o.key.split("/")[1] for o in lake.list("ratings_ml_training/")} == {f"customerNumber={k}" for k in keys}
        encryption = s3.head_object(Bucket=lake_bucket, Key=lake.list("ratings_ml_training/")[0].key)
        assert encryption["ServerSideEncryption"] == "aws:kms", "the bucket's default SSE-KMS applies"

        # -- events round-trip through the stream Terraform created (KMS-encrypted, on demand) ------
        stream = Stream.from_setting(settings.stream, settings.home, endpoint_url=aws_endpoint)
        events = [(str(i), json.dumps({"customer_number": 103, "product_code": "S10_1678", "i": i}).encode())
                  for i in range(25)]
        assert stream.put_records(events) == 25
        assert sorted(r.data for r in stream.read({}, limit=100)) == sorted(d for _, d in events)

        # -- the streaming edge as the code expects it -------------------------------------------
        lambdas = _client("lambda", aws_endpoint)
        inference = lambdas.get_function(FunctionName="recsys-model-inference")["Configuration"]
        assert inference["Environment"]["Variables"]["RECSYS_ARTIFACTS_URL"] == outputs["artifacts_url"]
        assert lambdas.get_function_url_config(FunctionName="recsys-model-inference")["FunctionUrl"] == \
            outputs["inference_function_url"]
        transformation = lambdas.get_function(FunctionName="recsys-stream-transformation")["Configuration"]
        for function in (inference, transformation):  # the deployment's serving rules, as Settings reads them
            rules = Settings.from_env(function["Environment"]["Variables"]).rules
            assert (rules.exclude_bought, rules.max_price, rules.in_stock_only) == (True, 150, True)
        firehose = _client("firehose", aws_endpoint).describe_delivery_stream(
            DeliveryStreamName="recsys-recommendations")["DeliveryStreamDescription"]
        (destination,) = firehose["Destinations"]
        (processor,) = destination["ExtendedS3DestinationDescription"]["ProcessingConfiguration"]["Processors"]
        parameters = {p["ParameterName"]: p["ParameterValue"] for p in processor["Parameters"]}
        assert parameters["LambdaArn"] == f"{transformation['FunctionArn']}:$LATEST"
        assert parameters["BufferSizeInMBs"] == "0.6"
        assert firehose["Source"]["KinesisStreamSourceDescription"]["KinesisStreamARN"] == stream.arn
        timings["platform"] = round(time.monotonic() - started, 1)

        # -- the orchestrator: its instance, rendered from the outputs, launches a run on ECS ------
        started = time.monotonic()
        _launch_a_run_on_ecs(outputs, aws_endpoint, tmp_path)
        timings["orchestration"] = round(time.monotonic() - started, 1)
    finally:
        if applied:
            for url in (v for k, v in outputs.items() if k.endswith("_url") and str(v).startswith("s3://")):
                _empty_bucket(s3, url.removeprefix("s3://"))
        # moto has no Glue DeleteConnection (NotImplementedError): the one resource left to moto's
        # reset instead of destroyed (docs/deploy.md).
        terraform(["state", "rm", "module.etl.aws_glue_connection.source"], work, env)
        started = time.monotonic()
        destroyed = terraform(["destroy", "-input=false", "-no-color", "-auto-approve"], work, env, timeout=900)
        timings["destroy"] = round(time.monotonic() - started, 1)
        print(f"terraform against moto, seconds: {timings}")
    assert destroyed.returncode == 0, f"terraform destroy failed:\n{destroyed.stdout[-3000:]}\n{destroyed.stderr[-6000:]}"

    # -- nothing left behind ---------------------------------------------------------------------
    assert not [b for b in s3.list_buckets()["Buckets"] if b["Name"].startswith("recsys-")]
    assert _client("kinesis", aws_endpoint).list_streams()["StreamNames"] == []
    assert _client("lambda", aws_endpoint).list_functions()["Functions"] == []
    assert _client("rds", aws_endpoint).describe_db_instances()["DBInstances"] == []
    ecs = _client("ecs", aws_endpoint)
    clusters = ecs.list_clusters()["clusterArns"]  # a deleted cluster stays listed, INACTIVE
    assert not [c for c in (ecs.describe_clusters(clusters=clusters)["clusters"] if clusters else [])
                if c["status"] != "INACTIVE"]
    assert _client("elbv2", aws_endpoint).describe_load_balancers()["LoadBalancers"] == []
    assert not json.loads(Path(work / "terraform.tfstate").read_text())["resources"]
