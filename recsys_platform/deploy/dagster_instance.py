"""The production Dagster deployment: `dagster-webserver` + `dagster-daemon` over PostgreSQL.

`dagster.yaml` (written by `prepare`) gives the instance:
- run, event-log and schedule storage in PostgreSQL (`dagster-postgres`), its URL read from
  RECSYS_DAGSTER_PG_URL when a process starts, so no password is ever written to disk; on one
  machine the embedded PostgreSQL under RECSYS_HOME serves (database `dagster`);
- the run queue (QueuedRunCoordinator): at most MAX_CONCURRENT_RUNS runs, and one run at a time
  for the batch engine (the training job's `recsys/queue` tag): two Spark or Glue builds at once
  would only compete for the same cluster and source;
- run retries: a run that fails is re-executed from its failure up to MAX_RETRIES times.

`serve` starts both processes on the code location in `workspace.yaml` (the package's module when
run from elsewhere) and stops both on Ctrl-C; `recsys-platform serve-dagster` and
`make serve-dagster` call it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from recsys_platform.errors import ConfigError
from recsys_platform.settings import VARIABLES, Settings

MAX_CONCURRENT_RUNS = 4
MAX_RETRIES = 2
# Runs tagged `recsys/queue=<name>` share a queue of `limit` slots: two batch builds would only
# compete for one cluster and one source; two trainings of one home would race to switch its vectors.
QUEUE_KEY = "recsys/queue"
BATCH_QUEUE, MODEL_QUEUE = "batch-engine", "model-and-vectors"
QUEUE_LIMITS = {BATCH_QUEUE: 1, MODEL_QUEUE: 1}
PG_URL_VAR = VARIABLES["dagster_pg_url"].name
# On ECS the instance's database credentials are two variables ECS injects from the RDS secret
# (the task definitions' `secrets`); dagster.yaml names them.
PG_USER_VAR, PG_PASSWORD_VAR = "RECSYS_DAGSTER_PG_USER", "RECSYS_DAGSTER_PG_PASSWORD"
RUN_CONTAINER = "run"  # the container of the run task definition that EcsRunLauncher overrides
DATABASE = "dagster"


def _coordination(max_concurrent_runs: int, max_retries: int) -> dict:
    """The run queue (with its one-slot queues) and run retries: the same wherever Dagster runs."""
    return {
        "run_coordinator": {"module": "dagster.core.run_coordinator", "class": "QueuedRunCoordinator", "config": {
            "max_concurrent_runs": max_concurrent_runs,
            "tag_concurrency_limits": [{"key": QUEUE_KEY, "value": name, "limit": limit}
                                       for name, limit in QUEUE_LIMITS.items()]}},
        "run_retries": {"enabled": True, "max_retries": max_retries},
        "telemetry": {"enabled": False},
    }


def _yaml(config: dict, writer: str) -> str:
    import yaml

    return f"# Written by {writer} (deploy/dagster_instance.py); see docs/deploy.md.\n" + \
        yaml.safe_dump(config, sort_keys=False)


def instance_yaml(max_concurrent_runs: int = MAX_CONCURRENT_RUNS, max_retries: int = MAX_RETRIES) -> str:
    """One machine (`serve-dagster`): PostgreSQL storage from RECSYS_DAGSTER_PG_URL, runs as processes."""
    return _yaml({"storage": {"postgres": {"postgres_url": {"env": PG_URL_VAR}}},
                  **_coordination(max_concurrent_runs, max_retries)}, "recsys-platform serve-dagster")


def ecs_instance_yaml(settings: Settings, max_concurrent_runs: int = MAX_CONCURRENT_RUNS,
                      max_retries: int = MAX_RETRIES) -> str:
    """On ECS (infra/modules/orchestration): the instance on RDS PostgreSQL over TLS, its user and
    password named by the variables ECS injects from the RDS secret (never written here), and
    every run an ECS task of the run task definition, in the private subnets, started by
    dagster-aws's `EcsRunLauncher`. Raises ConfigError naming the settings that are missing."""
    needed = {"dagster_pg_host": settings.dagster_pg_host, "ecs_cluster": settings.ecs_cluster,
              "ecs_run_task_definition": settings.ecs_run_task_definition, "ecs_subnets": settings.ecs_subnets,
              "ecs_security_groups": settings.ecs_security_groups}
    missing = [VARIABLES[field].name for field, value in needed.items() if not value]
    if missing:
        raise ConfigError(f"the ECS instance needs {', '.join(missing)} (infra/'s outputs, which the "
                          "orchestration module sets on its containers)")
    host, port = _pg_host(settings)
    params = {"sslmode": settings.dagster_pg_sslmode}
    if host.startswith("/"):  # a Unix socket directory: libpq takes it as the `host` parameter
        host, params["host"] = "localhost", host
    storage = {"postgres": {"postgres_db": {
        "username": {"env": PG_USER_VAR}, "password": {"env": PG_PASSWORD_VAR}, "hostname": host,
        "port": port, "db_name": DATABASE, "params": params,
        "scheme": "postgresql+psycopg2"}}}  # dagster-postgres binds client-side: psycopg2 (see _database_url)
    launcher = {
        "task_definition": settings.ecs_run_task_definition, "container_name": RUN_CONTAINER,
        "secrets_tag": None,  # the runs' secrets are in their task definition: no listing by tag
        # Where runs go is said here, not copied from the daemon's own task (a daemon outside ECS
        # launches the same runs).
        "use_current_ecs_task_config": False,
        "run_task_kwargs": {"cluster": settings.ecs_cluster, "launchType": "FARGATE", "networkConfiguration": {
            "awsvpcConfiguration": {"subnets": list(settings.ecs_subnets),
                                    "securityGroups": list(settings.ecs_security_groups),
                                    "assignPublicIp": "DISABLED"}}}}
    return _yaml({"storage": storage,
                  "run_launcher": {"module": "dagster_aws.ecs", "class": "EcsRunLauncher", "config": launcher},
                  **_coordination(max_concurrent_runs, max_retries)}, "recsys-platform ecs-instance")


def _create_database(conn) -> bool:
    """Create the instance's database (`dagster`) through an autocommit connection to the same
    server when it is missing; True when this call created it. Processes that start together may
    race: a concurrent creation by another one counts as done."""
    import psycopg
    from psycopg import sql

    if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone():
        return False
    try:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))
    except psycopg.errors.DuplicateDatabase:
        return False
    return True


def _pg_host(settings: Settings) -> tuple[str, int]:
    """RECSYS_DAGSTER_PG_HOST as (host, port); a host may be a Unix socket directory."""
    host, _, port = settings.dagster_pg_host.partition(":")
    return host, int(port or 5432)


def ensure_ecs_database(settings: Settings, user: str, password: str) -> bool:
    """Create the instance's database on the platform's PostgreSQL when it is missing, as the
    orchestrator's first start does (the three services start together); True when created."""
    import psycopg

    host, port = _pg_host(settings)
    try:
        with psycopg.connect(host=host, port=port, dbname="postgres", user=user, password=password,
                             sslmode=settings.dagster_pg_sslmode, connect_timeout=10, autocommit=True) as conn:
            return _create_database(conn)
    except psycopg.OperationalError as e:
        raise ConfigError(f"cannot reach the Dagster instance's PostgreSQL at {settings.dagster_pg_host} as {user}: "
                          f"{str(e).strip().splitlines()[0]}") from None


def write_ecs_instance(settings: Settings, out: str | None = None) -> tuple[Path, bool]:
    """What each Dagster container on ECS does first: create the instance's database when the
    credentials ECS injected are there and it is missing, then write `dagster.yaml` (to `out`, or
    `$DAGSTER_HOME/dagster.yaml`). Returns the file and whether the database was created."""
    text = ecs_instance_yaml(settings)
    created = PG_PASSWORD_VAR in os.environ and ensure_ecs_database(
        settings, os.environ.get(PG_USER_VAR, ""), os.environ[PG_PASSWORD_VAR])
    path = Path(out) if out else Path(os.environ.get("DAGSTER_HOME") or ".") / "dagster.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path, created


def dagster_home(settings: Settings) -> Path:
    return Path(settings.home) / "dagster_deploy"


def _database_url(settings: Settings) -> str:
    """RECSYS_DAGSTER_PG_URL, or the embedded server's `dagster` database (created if missing).

    dagster-postgres speaks psycopg2 (its SQL binds parameters client-side); SQLAlchemy 2.1 maps a
    bare `postgresql://` to psycopg 3, so the driver is named explicitly."""
    if settings.dagster_pg_url:
        return _psycopg2(settings.dagster_pg_url)
    import psycopg

    from recsys_platform.vectors.embedded import embedded_dsn

    server = embedded_dsn(settings.pgdata)
    with psycopg.connect(server, autocommit=True) as conn:
        _create_database(conn)
    # embedded_dsn: postgresql://user:@/postgres?host=<socket dir>; the same server, database `dagster`
    head, _, tail = server.partition("/postgres?")
    return _psycopg2(f"{head}/{DATABASE}?{tail}")


def _psycopg2(url: str) -> str:
    for bare in ("postgresql://", "postgres://"):
        if url.startswith(bare):
            return "postgresql+psycopg2://" + url[len(bare):]
    return url


def prepare(settings: Settings) -> dict[str, str]:
    """Write DAGSTER_HOME/dagster.yaml; return the environment the webserver and daemon need."""
    home = dagster_home(settings)
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text(instance_yaml())
    # The children inherit this process's environment (credentials, PATH), with the same settings
    # as this process (so the code location they load reads what this command read).
    env = {**os.environ, **settings.environment()}
    env.update({"DAGSTER_HOME": str(home), PG_URL_VAR: _database_url(settings)})
    return env


def _workspace_args() -> list[str]:
    workspace = Path.cwd() / "workspace.yaml"
    if workspace.exists():
        return ["-w", str(workspace)]
    return ["-m", "recsys_platform.definitions"]


def _console_script(name: str) -> str:
    """A console script of this Python's environment (dagster-daemon has no public `-m` module)."""
    import shutil

    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.exists() else shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found beside {sys.executable} or on PATH: pip install dagster")
    return found


def _default_signals() -> None:
    # Background processes inherit ignored SIGINT/SIGTERM; restore the defaults so they stop.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextmanager
def serving(settings: Settings, host: str = "127.0.0.1", port: int = 3000,
            log_dir: Path | None = None) -> Iterator[dict[str, subprocess.Popen]]:
    """The webserver and the daemon over the production instance, stopped on exit."""
    env = prepare(settings)
    log_dir = Path(log_dir or dagster_home(settings) / "logs")
    log_dir.mkdir(parents=True, exist_ok=True)
    commands = {
        "daemon": [_console_script("dagster-daemon"), "run", *_workspace_args()],
        "webserver": [sys.executable, "-m", "dagster_webserver", "-h", host, "-p", str(port), *_workspace_args()],
    }
    processes: dict[str, subprocess.Popen] = {}
    try:
        for name, argv in commands.items():
            log = open(log_dir / f"{name}.log", "ab")  # noqa: SIM115 - held by the child
            processes[name] = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                               start_new_session=True, preexec_fn=_default_signals)
        yield processes
    finally:
        for proc in processes.values():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 30
        for proc in processes.values():
            try:
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def serve(settings: Settings, host: str = "127.0.0.1", port: int = 3000) -> int:
    """Run the deployment in the foreground until Ctrl-C or until one of the two processes exits."""
    with serving(settings, host, port) as processes:
        print(f"Dagster UI: http://{host}:{port}  (instance: {dagster_home(settings)}/dagster.yaml, "
              f"PostgreSQL storage, run queue, run retries; logs in {dagster_home(settings)}/logs)", flush=True)
        try:
            while all(p.poll() is None for p in processes.values()):
                time.sleep(1)
        except KeyboardInterrupt:
            return 0
        exited = {name: p.returncode for name, p in processes.items() if p.poll() is not None}
        print(f"stopped: {exited} exited; see {dagster_home(settings)}/logs", file=sys.stderr)
        return 1
