"""infra/: Terraform 1.0 validates offline, checkov passes, and the Terraform matches the code."""

import ast
import hashlib
import json
import os
import re
import subprocess
import sys
import time
import zipfile

import pytest

from recsys_platform.streaming import firehose
from tests.conftest import REPO
from tests.terraform import TOOLS, terraform, terraform_env, tool

INFRA = REPO / "infra"
TF_FILES = sorted(INFRA.rglob("*.tf"))
TF_TEXT = "\n".join(p.read_text() for p in TF_FILES)


def test_terraform_1_0_validates_offline(tmp_path, package_dir):
    env = terraform_env(tmp_path)
    init = terraform(["init", "-backend=false", "-input=false", "-no-color"], INFRA, env)
    assert init.returncode == 0, init.stdout + init.stderr
    validate = terraform(["validate", "-json"], INFRA, env)
    report = json.loads(validate.stdout)
    assert report["valid"], report["diagnostics"]
    assert report["error_count"] == 0 and report["warning_count"] == 0, report["diagnostics"]
    fmt = terraform(["fmt", "-recursive", "-check", "-list"], INFRA, env, timeout=60)
    assert fmt.returncode == 0, f"not formatted: {fmt.stdout}"
    test_only = terraform(["fmt", "-recursive", "-check", "-list", str(REPO / "tests" / "infra_moto")], INFRA, env,
                          timeout=60)
    assert test_only.returncode == 0, f"not formatted: {test_only.stdout}"


def test_checkov_finds_no_failure(tmp_path):
    checkov = tool(TOOLS / "checkov" / "bin" / "checkov", "checkov")
    run = subprocess.run([str(checkov), "-d", str(INFRA), "--framework", "terraform", "dockerfile", "--skip-download",
                          "--quiet", "-o", "json"], capture_output=True, text=True, timeout=600)
    report = json.loads(run.stdout)
    summaries = {r["check_type"]: r["summary"] for r in (report if isinstance(report, list) else [report])}
    (tmp_path / "checkov.json").write_text(json.dumps(summaries))
    assert set(summaries) == {"terraform", "dockerfile"}, summaries
    for kind, summary in summaries.items():
        assert summary["failed"] == 0 and summary["parsing_errors"] == 0, (kind, run.stdout[-4000:])
    assert summaries["terraform"]["passed"] > 100 and summaries["dockerfile"]["skipped"] == 3
    dockerfiles = (INFRA / "lambda.Dockerfile").read_text() + (INFRA / "platform.Dockerfile").read_text()
    skips = re.findall(r"#checkov:skip=(CKV2?_(?:AWS|DOCKER)_\d+):(.*)", TF_TEXT + "\n" + dockerfiles)
    assert {"CKV_DOCKER_2", "CKV_DOCKER_3"} <= {check for check, _ in skips}
    assert all(reason.strip() for _, reason in skips), "every skip states a reason"


def test_the_streaming_edge_is_sized_and_closed_as_the_code_expects():
    streaming = (INFRA / "modules" / "streaming" / "main.tf").read_text()
    default = re.search(r'variable "processor_buffer_mb" \{.*?default\s*=\s*([0-9.]+)', TF_TEXT, flags=re.S)
    assert default and float(default.group(1)) == firehose.PROCESSOR_BUFFER_MB, "the budgeted processor buffer"
    assert 0.2 <= firehose.PROCESSOR_BUFFER_MB <= 3, "Firehose accepts 0.2-3 MB"
    assert 'parameter_value = tostring(var.processor_buffer_mb)' in streaming
    url = re.search(r'resource "aws_lambda_function_url" "inference" \{(.*?)\n\}', streaming, flags=re.S)
    assert url and 'authorization_type = "AWS_IAM"' in url.group(1) and 'this["inference"]' in url.group(1)
    egress = re.findall(r'resource "aws_security_group_rule" "(lambda_[a-z_]+)" \{(.*?)\n\}', streaming, flags=re.S)
    assert egress and all("cidr_blocks" not in body for _, body in egress), "no egress to an address range"
    by_name = dict(egress)
    assert "var.vector_db_security_group_id" in by_name["lambda_to_database"]
    assert "5432" in by_name["lambda_to_database"]


def test_no_secret_account_id_or_key_in_terraform():
    assert not re.search(r"\b\d{12}\b", TF_TEXT), "an AWS account id"
    assert not re.search(r"AKIA[0-9A-Z]{16}", TF_TEXT), "an access key"
    assert not re.search(r'(?i)\b(password|secret_key)\s*=\s*"[^"]', TF_TEXT), "a literal password"
    assert "manage_master_user_password         = true" in TF_TEXT or re.search(r"manage_master_user_password\s*=\s*true", TF_TEXT)


def test_lambda_handlers_named_in_terraform_exist():
    handlers = re.findall(r'command\s*=\s*"(lambdas\.[^"]+)"', TF_TEXT)
    assert sorted(handlers) == ["lambdas.model_inference.handler.lambda_handler",
                                "lambdas.stream_transformation.handler.lambda_handler"]
    dockerfile = (INFRA / "lambda.Dockerfile").read_text()
    assert 'CMD ["lambdas.model_inference.handler.lambda_handler"]' in dockerfile
    for handler in handlers:
        module, function = handler.rsplit(".", 1)
        tree = ast.parse((REPO / f"{module.replace('.', '/')}.py").read_text())
        assert function in {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}


def test_lambda_image_requirements_are_the_packages_dependencies():
    import tomllib

    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[<>=\[ ]", d)[0].lower() for d in deps}
    wanted = [line.split("#")[0].strip() for line in (INFRA / "lambda-requirements.txt").read_text().splitlines()]
    wanted = {re.split(r"[<>=\[ ]", w)[0].lower() for w in wanted if w}
    assert wanted <= names, wanted - names
    assert not {n for n in wanted if n.startswith(("dagster", "pyspark"))}


def _environment_block(function: str) -> set[str]:
    """The environment variable names of one function in the streaming module's `functions` map."""
    text = (INFRA / "modules" / "streaming" / "main.tf").read_text()
    block = text.split(f"\n    {function} = {{", 1)[1]
    env = block.split("environment = {", 1)[1]
    env = env[: re.search(r"\n\s*}\s*\n", env).start()]  # up to the line that closes the map
    return set(re.findall(r"^\s*([A-Z_]+)\s*=", env, flags=re.M))


def test_lambda_environment_variables_are_settings_the_code_reads():
    """Both Lambdas read the platform's one Settings: every variable infra/ sets is one of them."""
    from recsys_platform.settings import VARIABLES

    names = {v.name for v in VARIABLES.values()}
    inference_env = _environment_block("inference")
    transformation_env = _environment_block("transformation")
    assert inference_env <= names, inference_env - names
    assert {"RECSYS_ARTIFACTS_URL", "RECSYS_VECTOR_SECRET_ARN", "RECSYS_VECTOR_HOST"} <= inference_env
    assert transformation_env <= names, transformation_env - names
    assert "RECSYS_INFERENCE_FUNCTION" in transformation_env


def test_firehose_prefixes_match_the_delivery_layout():
    import datetime as dt

    prefix = re.search(r'\bprefix\s*=\s*"([^"]+)"', TF_TEXT).group(1)
    error_prefix = re.search(r'error_output_prefix\s*=\s*"([^"]+)"', TF_TEXT).group(1)
    when = dt.datetime(2026, 11, 28, 9, tzinfo=dt.timezone.utc)
    as_firehose = prefix.replace("!{timestamp:yyyy/MM/dd/HH}", when.strftime("%Y/%m/%d/%H"))
    assert as_firehose == firehose.hour_prefix(when) + "/"
    # Firehose names processing failures `processing-failed` in !{firehose:error-output-type}.
    assert error_prefix.replace("!{firehose:error-output-type}", "processing-failed").replace(
        "!{timestamp:yyyy/MM/dd/HH}", when.strftime("%Y/%m/%d/%H")) == f"{firehose.FAILED_PREFIX}/{firehose.hour_prefix(when)}/"


def test_glue_arguments_are_settings_the_entry_point_reads():
    from recsys_platform.settings import VARIABLES

    passed = set(re.findall(r'"--(RECSYS_[A-Z_]+)"', TF_TEXT))
    assert {"RECSYS_LAKE_URL", "RECSYS_SOURCE_JDBC_URL", "RECSYS_SOURCE_SECRET_ARN"} <= passed
    assert passed <= {v.name for v in VARIABLES.values()}, passed - {v.name for v in VARIABLES.values()}


def test_packages_are_reproducible_and_import_without_dagster(package_dir, tmp_path):
    from recsys_platform.deploy.packaging import build

    again = build(tmp_path / "again")
    for name, digest in again.items():
        assert hashlib.sha256((package_dir / name).read_bytes()).hexdigest() == digest, name
    trees = {}
    for name in ("model_inference", "stream_transformation"):
        target = tmp_path / name
        with zipfile.ZipFile(package_dir / "lambda" / f"{name}.zip") as zf:
            zf.extractall(target)
        trees[name] = target
    checks = [*trees.items(), *[(n, package_dir / "lambda-src") for n in trees]]  # + the image's source tree
    for name, target in checks:
        probe = (f"import sys; import lambdas.{name}.handler as h, recsys_platform; "
                 f"assert recsys_platform.__file__.startswith({str(target)!r}), recsys_platform.__file__; "
                 "assert not [m for m in sys.modules if m.split('.')[0] in ('dagster', 'pyspark')], 'dagster or spark imported'; "
                 "print(h.lambda_handler.__name__)")
        run = subprocess.run([sys.executable, "-c", probe], cwd=target, env={**os.environ, "PYTHONPATH": str(target)},
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0 and run.stdout.strip() == "lambda_handler", run.stderr[-2000:]


def test_glue_entry_builds_the_source_url_from_the_connection_and_secret(s3_endpoint):
    """The Glue script's settings come from its arguments; the password from Secrets Manager."""
    import boto3

    from recsys_platform import wiring
    from recsys_platform.deploy.glue_job import job_arguments
    from recsys_platform.settings import Settings

    secret = boto3.client("secretsmanager", endpoint_url=s3_endpoint).create_secret(
        Name=f"source-{os.getpid()}-{time.time_ns()}", SecretString=json.dumps({"username": "etl", "password": "p@ss:w"}))
    argv = ["x.py", "--JOB_NAME", "j", "--RECSYS_LAKE_URL", "s3://lake", "--flag", "--RECSYS_HASH_BUCKETS", "0",
            "--RECSYS_SOURCE_JDBC_URL", "jdbc:mysql://db.example:3306/classicmodels?useSSL=true",
            "--RECSYS_SOURCE_SECRET_ARN", secret["ARN"], "--AWS_ENDPOINT_URL", s3_endpoint]
    arguments = job_arguments(argv)
    assert arguments["RECSYS_LAKE_URL"] == "s3://lake" and arguments["flag"] == "" and arguments["JOB_NAME"] == "j"
    settings = Settings.from_env({k: v for k, v in arguments.items() if k.startswith(("RECSYS_", "AWS_"))})
    assert wiring.source_url(settings) == "mysql+pymysql://etl:p%40ss%3Aw@db.example:3306/classicmodels"


IMAGE_PACKAGES_LIMIT = 150e6  # the Lambda image's Python packages, unpacked (were about 500 MB with the training libraries)


def test_the_image_requirements_are_what_serving_imports_and_weigh_under_the_limit():
    """`recsys-platform package` reports the image's packages as installed here; none of the
    training libraries is among them."""
    from recsys_platform.deploy.packaging import image_packages

    sizes = image_packages()
    assert {"numpy", "psycopg", "psycopg-binary", "fastapi", "mangum", "boto3"} <= set(sizes)
    assert not {"pandas", "pyarrow", "scipy", "scikit-learn", "numba", "matplotlib"} & set(sizes)
    assert sum(sizes.values()) < IMAGE_PACKAGES_LIMIT, f"{sum(sizes.values()) / 1e6:.0f} MB"


def test_the_lambda_image_contents_run_both_handlers(package_dir, catalog, tmp_path):
    """What infra/lambda.Dockerfile puts in the image (infra/lambda-requirements.txt in a clean
    venv, plus dist/lambda-src/), run without Docker: both handlers work, and neither Dagster
    nor Spark is importable there, so the image needs nothing more."""
    import venv

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    pip = subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", "-r",
                          str(INFRA / "lambda-requirements.txt")], capture_output=True, text=True, timeout=900)
    assert pip.returncode == 0, pip.stderr[-3000:]
    (site,) = env_dir.glob("lib/python*/site-packages")
    installed = sum(f.stat().st_size for top in site.iterdir() if not top.name.startswith(("pip", "_distutils"))
                    for f in ([top] if top.is_file() else top.rglob("*")) if f.is_file())
    assert installed < IMAGE_PACKAGES_LIMIT, f"the image's Python packages take {installed / 1e6:.0f} MB"
    probe = """
import base64, importlib.util, json, sys
for name in ("dagster", "pyspark", "pandas", "pyarrow", "scipy", "sklearn", "numba", "matplotlib"):
    assert importlib.util.find_spec(name) is None, name
from lambdas.stream_transformation.handler import lambda_handler
good = {"session_id": "s1", "customer_number": 103, "city": "Nantes", "country": "France", "credit_limit": 21000,
        "browse_history": [{"product_code": sys.argv[1], "quantity": 1, "in_shopping_cart": True}]}
records = [{"recordId": str(n), "approximateArrivalTimestamp": 0, "data": base64.b64encode(d).decode()}
           for n, d in enumerate([json.dumps(good).encode(), b"{broken"])]
out = lambda_handler({"records": records})
print(json.dumps([r["result"] for r in out["records"]]))
"""
    src = package_dir / "lambda-src"
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(src), "HOME": str(tmp_path),
           "RECSYS_ARTIFACTS_URL": catalog["store"].url, "RECSYS_VECTOR_DSN": catalog["vectors"].dsn}
    run = subprocess.run([str(python), "-c", probe, catalog["products"][0]], cwd=src, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout.strip().splitlines()[-1]) == ["Ok", "ProcessingFailed"]


def test_the_vector_database_from_a_secret_is_resolved_where_used(s3_endpoint, tmp_path):
    """RECSYS_VECTOR_SECRET_ARN (the Lambdas' and the deployed Dagster's form): the credentials
    are read from Secrets Manager when the store is first used, and TLS is required."""
    import boto3
    from psycopg.conninfo import conninfo_to_dict

    from recsys_platform.definitions import build_resources
    from recsys_platform.settings import Settings

    secret = boto3.client("secretsmanager", endpoint_url=s3_endpoint).create_secret(
        Name=f"vectors-{time.time_ns()}", SecretString=json.dumps({"username": "recsys", "password": "p@ss"}))
    settings = Settings.from_env({"RECSYS_HOME": str(tmp_path), "RECSYS_VECTOR_SECRET_ARN": secret["ARN"],
                                  "RECSYS_VECTOR_HOST": "vectors.example:6543", "AWS_ENDPOINT_URL": s3_endpoint})
    resource = build_resources(settings)["vector_store"]
    dsn = conninfo_to_dict(resource.store.dsn)
    assert dsn == {"host": "vectors.example", "port": "6543", "dbname": "recsys", "user": "recsys",
                   "password": "p@ss", "sslmode": "require"}
    assert not (tmp_path / "pgdata").exists(), "no embedded server when a secret names the database"


@pytest.mark.production
def test_the_platform_image_contents_run_every_role(tmp_path):
    """What infra/platform.Dockerfile installs (the project, as pyproject.toml pins it) in a clean
    venv, run without Docker: each role's program starts, the definitions load, and
    `ecs-instance` renders the instance the ECS containers write at start."""
    import shutil
    import venv

    # What the Dockerfile copies, and nothing else (pip builds in the tree it is given: not this one).
    src = tmp_path / "src"
    copies = re.findall(r"^COPY (.+) /opt/recsys/", (INFRA / "platform.Dockerfile").read_text(), flags=re.M)
    src.mkdir()
    for item in (name.rstrip("/") for line in copies for name in line.split()):
        if (REPO / item).is_dir():
            shutil.copytree(REPO / item, src / item, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(REPO / item, src / item)
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    bin_dir = env_dir / "bin"
    pip = subprocess.run([str(bin_dir / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                          str(src)], capture_output=True, text=True, timeout=1500)
    assert pip.returncode == 0, pip.stderr[-3000:]
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(tmp_path), "DAGSTER_HOME": str(tmp_path / "home"),
           "RECSYS_HOME": str(tmp_path / "recsys"), "RECSYS_DAGSTER_PG_HOST": "db.internal:5432",
           "RECSYS_ECS_CLUSTER": "recsys-dagster",
           "RECSYS_ECS_RUN_TASK_DEFINITION": "arn:aws:ecs:us-east-1:123456789012:task-definition/recsys-dagster-run",
           "RECSYS_ECS_SUBNETS": "subnet-0a,subnet-0b", "RECSYS_ECS_SECURITY_GROUPS": "sg-0c"}

    (tmp_path / "home").mkdir()  # the image's DAGSTER_HOME

    def run(*argv: str) -> subprocess.CompletedProcess:
        done = subprocess.run(list(argv), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, (argv, done.stdout[-2000:], done.stderr[-3000:])
        return done

    rendered = run("recsys-platform", "ecs-instance", "--out", "-").stdout
    assert "class: EcsRunLauncher" in rendered and "sslmode: require" in rendered and "subnet-0b" in rendered
    run("dagster", "definitions", "validate", "-m", "recsys_platform.definitions")
    for argv in (["dagster-webserver", "--help"], ["dagster-daemon", "run", "--help"],
                 ["dagster", "code-server", "start", "--help"], ["dagster", "api", "execute_run", "--help"]):
        run(*argv)
    run("python", "-c", "import dagster_aws.ecs, dagster_postgres, recsys_platform.definitions")
