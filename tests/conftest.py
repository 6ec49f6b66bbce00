"""Session fixtures that start or connect the real engines: Spark local, MariaDB, an S3 endpoint.

MariaDB and the S3-compatible endpoint (moto's server) are started by `scripts/services.sh`,
which writes their addresses to `.services/env`; `make test` and `.ci/run` source it. Without
them, the tests that need them fail with the reason and the command that starts them: none is
skipped.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa

from recsys_platform.batch.engines.spark_config import (
    local_workers_run_this_interpreter,
    spark_config,
)
from recsys_platform.batch.seed import seed
from recsys_platform.settings import Settings

REPO = Path(__file__).resolve().parents[1]
TEST_AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}


def _is_xdist_worker(config) -> bool:
    return hasattr(config, "workerinput")


# Every process a test run starts carries this run's mark in its environment, the embedded
# PostgreSQL servers included, so that the leak guard below stops this run's servers and never
# another run's on the same machine (a second `pytest` beside CI stopped CI's server mid-run).
RUN_MARK = "RECSYS_TEST_RUN"


def pytest_configure(config):
    # Dummy credentials for the local S3 endpoint, set before Spark forks its Python workers
    # (they inherit the environment of that moment). Tests never reach real AWS.
    for var, value in TEST_AWS_ENV.items():
        os.environ.setdefault(var, value)
    if not _is_xdist_worker(config):  # a fresh mark per run (an inner run too); workers inherit it
        os.environ[RUN_MARK] = uuid.uuid4().hex


JDBC_JAR = os.environ.get("RECSYS_TEST_JDBC_JAR", "/usr/share/java/mariadb-java-client.jar")


def _postgres_data_dirs(run: str | None = None) -> set[str]:
    """The data folders of the PostgreSQL servers running on this machine (`postgres -D <dir>`);
    with `run`, only those started by the test run of that mark (RUN_MARK)."""
    mark = None if run is None else f"{RUN_MARK}={run}".encode()
    out = set()
    for proc in Path("/proc").iterdir():
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
            if not (args and args[0].endswith(b"/postgres") and b"-D" in args):
                continue
            if mark is not None and mark not in (proc / "environ").read_bytes().split(b"\0"):
                continue
        except OSError:  # gone meanwhile, or not ours to read
            continue
        out.add(args[args.index(b"-D") + 1].decode())
    return out


_POSTGRES_LEFT = pytest.StashKey[list]()


@pytest.hookimpl(trylast=True)  # after pytest's own, which tears the session fixtures down
def pytest_sessionfinish(session):
    """No embedded PostgreSQL started by this test run outlives it: any left is stopped and fails the run."""
    if _is_xdist_worker(session.config):  # the controller checks, once the whole run is over
        return
    left = sorted(_postgres_data_dirs(os.environ[RUN_MARK]))
    if left:
        from recsys_platform.vectors.embedded import stop_embedded

        for data_dir in left:
            stop_embedded(data_dir)
        session.config.stash[_POSTGRES_LEFT] = left
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, config):
    if left := config.stash.get(_POSTGRES_LEFT, None):
        terminalreporter.write_line(f"FAILED: the tests left PostgreSQL running on {left} (now stopped): "
                                    "stop it where it is started", red=True, bold=True)


def _missing(message: str) -> None:
    """A missing engine fails the test with the fix: no test is skipped for want of a service."""
    pytest.fail(message, pytrace=False)


def _service(var: str, what: str) -> str:
    value = os.environ.get(var, "")
    if not value:
        _missing(f"{what} is not running: start it with scripts/services.sh and source .services/env ({var} unset)")
    return value


@pytest.fixture(scope="session")
def spark():
    """One local SparkSession for the whole test run (6 s to start), with the MariaDB JDBC jar."""
    from pyspark.sql import SparkSession

    local_workers_run_this_interpreter()
    builder = SparkSession.builder
    for key, value in spark_config("local[2]", jars=JDBC_JAR if os.path.exists(JDBC_JAR) else "").items():
        builder = builder.config(key, value)
    session = builder.getOrCreate()
    yield session
    session.stop()


@pytest.fixture(scope="session")
def jdbc_jar() -> str:
    if not os.path.exists(JDBC_JAR):
        _missing(f"MariaDB JDBC driver not found at {JDBC_JAR} (apt-get install libmariadb-java)")
    return JDBC_JAR


@pytest.fixture(scope="session")
def mysql_server_url() -> str:
    return _service("RECSYS_TEST_MYSQL_URL", "MariaDB")


@pytest.fixture
def mysql_url(mysql_server_url: str):
    """A fresh, empty database on the MariaDB server for one test, dropped afterwards."""
    server = sa.engine.make_url(mysql_server_url)
    name = f"t_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(server.set(database=""))
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    yield server.set(database=name).render_as_string(hide_password=False)
    with admin.begin() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
    admin.dispose()


@pytest.fixture(scope="session")
def s3_endpoint() -> str:
    return _service("RECSYS_TEST_S3_ENDPOINT", "The S3-compatible endpoint (moto server)")


@pytest.fixture
def s3_bucket(s3_endpoint: str) -> str:
    """A fresh bucket on the S3 endpoint; returns its name."""
    import boto3

    name = f"lake-{uuid.uuid4().hex[:10]}"
    boto3.client("s3", endpoint_url=s3_endpoint).create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def seeded_sqlite_template(tmp_path_factory) -> Path:
    """A scale-1 SQLite source, seeded once; tests copy it so they may change it freely."""
    path = tmp_path_factory.mktemp("template") / "classicmodels.db"
    seed(sa.create_engine(f"sqlite:///{path}"))
    return path


@pytest.fixture
def settings(tmp_path: Path, seeded_sqlite_template: Path) -> Settings:
    """Embedded-default settings in a private RECSYS_HOME with a seeded SQLite source."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "classicmodels.db").write_bytes(seeded_sqlite_template.read_bytes())
    return Settings.build(home=str(home))


@pytest.fixture(scope="session")
def pg_server_dsn() -> str:
    """One embedded PostgreSQL + pgvector for the test run, stopped and removed at the end.

    Its folder is not under pytest's basetemp: the server runs as the `embedded_postgres` user,
    and every new pytest session resets /tmp/pytest-of-<user> to 0700, which would lock that
    user out of a running server's data folder (PANIC on the next checkpoint).
    """
    import shutil
    import tempfile

    from recsys_platform.vectors.embedded import embedded_dsn, stop_embedded

    root = Path(tempfile.mkdtemp(prefix="recsys-test-pg-"))
    data_dir = root / "pgdata"
    yield embedded_dsn(data_dir)
    stop_embedded(data_dir)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_dsn(pg_server_dsn: str) -> str:
    """A fresh database on the embedded server for one test."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    dsn = pg_server_dsn.replace("/postgres?", f"/{name}?")
    yield dsn
    with psycopg.connect(pg_server_dsn, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def load_serving_catalog(vectors, frame) -> None:
    """The items' attributes and the customers' purchases of a training frame (its product columns
    and its ratings), as the `item_attributes` asset loads them from the source."""
    from recsys_platform.vectors.catalog import items_from_products, load_catalog

    products = frame.drop_duplicates("productCode").to_dict("records")
    load_catalog(vectors, items_from_products(products), zip(frame["customerNumber"], frame["productCode"]))


@pytest.fixture(scope="session")
def catalog(tmp_path_factory, pg_server_dsn):
    """A trained, published model with its vectors loaded and active, and the inference service,
    the model inference handler and the stream transformation composed over them."""
    import psycopg

    from recsys_platform import wiring
    from recsys_platform.batch.seed import training_table
    from recsys_platform.ml import artifacts
    from recsys_platform.ml.hybrid import HybridSettings
    from recsys_platform.ml.spec import RETAIL
    from recsys_platform.ml.training import train_recommender
    from recsys_platform.serving.handlers import ModelInference
    from recsys_platform.serving.service import InferenceService, ModelCache
    from recsys_platform.storage.object_store import ObjectStore
    from recsys_platform.vectors.store import VectorStore

    frame = training_table()
    run = train_recommender(frame, RETAIL, HybridSettings(max_iter=150), l2_grid=None)
    s = run.model.spec
    store = ObjectStore.from_url((tmp_path_factory.mktemp("art") / "ml-artifacts").as_uri())
    published = artifacts.publish(store, run.model, frame[s.user_columns()].drop_duplicates(s.user_id),
                                  frame[s.item_columns()].drop_duplicates(s.item_id), run.metrics, "test")
    name = f"l_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_server_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    vectors = VectorStore(pg_server_dsn.replace("/postgres?", f"/{name}?"))
    _, manifest, emb = artifacts.load_embeddings(store)
    vectors.load_version(published.version, emb["item"], emb["user"], manifest["dim"])
    vectors.activate(published.version)
    artifacts.set_current(store, published.version)
    load_serving_catalog(vectors, frame)
    service = InferenceService(ModelCache(store, vectors), vectors, k=5)
    transform = wiring.in_process_transformation(service)  # as the CLI composes it: inference in-process
    yield {"frame": frame, "store": store, "vectors": vectors, "version": published.version,
           "service": service, "inference": ModelInference(service), "transform": transform,
           "products": sorted(frame["productCode"].unique()), "customers": sorted(frame["customerNumber"].unique())}
    vectors.close()


# -- the demo's state and the webserver over it (shared by the GraphQL and browser tests) ---------
@pytest.fixture(scope="session")
def demo_home(tmp_path_factory) -> Path:
    """One `recsys-platform demo` run on the embedded default, shared by the tests that read it."""
    from tests.browser import run_demo

    home = tmp_path_factory.mktemp("demo")
    proc = run_demo(home)
    (home / "demo.out").write_text(proc.stdout + "\n--- stderr ---\n" + proc.stderr)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    yield home
    from recsys_platform.vectors.embedded import stop_embedded

    stop_embedded(home / "pgdata")


@pytest.fixture(scope="session")
def webserver(demo_home):
    """`dagster-webserver` over the demo's state (what `make ui` serves); yields its port."""
    from tests.browser import dagster_ui

    with dagster_ui(demo_home) as port:
        yield port


@pytest.fixture(scope="module")
def package_dir(tmp_path_factory) -> Path:
    """What `recsys-platform package` builds: the Glue script and zip, the Lambda zips (infra/'s inputs)."""
    from recsys_platform.deploy.packaging import build

    out = tmp_path_factory.mktemp("dist")
    build(out)
    return out
