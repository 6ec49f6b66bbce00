"""The tests' own guard (tests/conftest.py): a test run that leaves an embedded PostgreSQL running
fails, names the server's folder and stops it, whether pytest runs alone or on pytest-xdist
workers (as `make test` runs it). Shown by an inner run of two passing tests, one of which leaks a
server: a guard that cannot fail would guard nothing. A server that another run started meanwhile
on the same machine is not this run's: the guard leaves it running."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.conftest import REPO, RUN_MARK, _postgres_data_dirs

LEAKING_TESTS = '''
import tempfile
from pathlib import Path


def test_leaves_a_server_running():
    from recsys_platform.vectors.embedded import embedded_dsn

    embedded_dsn(Path(tempfile.mkdtemp(prefix="recsys-leak-")) / "pgdata")


def test_starts_nothing():
    assert True
'''


ANOTHER_RUNS_SERVER = '''
import os
import subprocess
import sys


def test_another_run_starts_a_server_meanwhile():
    env = {**os.environ, "RECSYS_TEST_RUN": "another run"}
    subprocess.run([sys.executable, "-c", "import sys; from recsys_platform.vectors.embedded import embedded_dsn; "
                    "embedded_dsn(sys.argv[1])", os.environ["OTHER_PGDATA"]], env=env, check=True, timeout=120)
'''


def run_inner(tmp_path: Path, tests: str, workers: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    """A pytest run of `tests` with this repository's conftest, in its own folder."""
    inner = tmp_path / "inner"
    inner.mkdir()
    shutil.copy(REPO / "tests" / "conftest.py", inner / "conftest.py")
    (inner / "test_inner.py").write_text(tests)
    # --basetemp: an inner session without it would reset /tmp/pytest-of-<user> to 0700 and lock
    # the embedded servers of this run's other workers out of their folders (see conftest).
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *workers,
                           "--basetemp", str(tmp_path / "basetemp"), str(inner)],
                          cwd=inner, capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one process", "xdist"])
def test_a_run_that_leaves_postgresql_running_fails_names_it_and_stops_it(tmp_path, workers):
    run = run_inner(tmp_path, LEAKING_TESTS, workers)
    assert "2 passed" in run.stdout, run.stdout[-3000:] + run.stderr[-2000:]  # the tests pass: the guard fails the run
    assert run.returncode == pytest.ExitCode.TESTS_FAILED, run.stdout[-3000:]
    (line,) = [line for line in run.stdout.splitlines() if "the tests left PostgreSQL running" in line]
    assert "recsys-leak-" in line and "(now stopped)" in line
    assert not [d for d in _postgres_data_dirs() if "recsys-leak-" in d], "the guard stopped the server"


def test_a_server_of_another_run_is_left_running(tmp_path):
    """A run that starts no server of its own passes, and leaves alone the server that another run
    (another mark) started on this machine while it ran."""
    from recsys_platform.vectors.embedded import stop_embedded

    other = Path(tempfile.mkdtemp(prefix="recsys-other-run-")) / "pgdata"  # outside basetemp (see conftest)
    try:
        run = run_inner(tmp_path, ANOTHER_RUNS_SERVER, [], env={**os.environ, "OTHER_PGDATA": str(other)})
        assert run.returncode == pytest.ExitCode.OK, run.stdout[-3000:] + run.stderr[-2000:]
        assert str(other) in _postgres_data_dirs("another run"), "still running, with the other run's mark"
        assert str(other) not in _postgres_data_dirs(os.environ[RUN_MARK])
    finally:
        stop_embedded(other)
        shutil.rmtree(other.parent, ignore_errors=True)
