"""The tests' own guard (tests/conftest.py): a test run that leaves an embedded PostgreSQL running
fails, names the server's folder and stops it, whether pytest runs alone or on pytest-xdist
workers (as `make test` runs it). Shown by an inner run of two passing tests, one of which leaks a
server: a guard that cannot fail would guard nothing."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO, _postgres_data_dirs

LEAKING_TESTS = '''
import tempfile
from pathlib import Path


def test_leaves_a_server_running():
    from recsys_platform.vectors.embedded import embedded_dsn

    embedded_dsn(Path(tempfile.mkdtemp(prefix="recsys-leak-")) / "pgdata")


def test_starts_nothing():
    assert True
'''


@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one process", "xdist"])
def test_a_run_that_leaves_postgresql_running_fails_names_it_and_stops_it(tmp_path, workers):
    inner = tmp_path / "inner"
    inner.mkdir()
    shutil.copy(REPO / "tests" / "conftest.py", inner / "conftest.py")
    (inner / "test_leaks.py").write_text(LEAKING_TESTS)
    # --basetemp: an inner session without it would reset /tmp/pytest-of-<user> to 0700 and lock
    # the embedded servers of this run's other workers out of their folders (see conftest).
    run = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *workers,
                          "--basetemp", str(tmp_path / "basetemp"), str(inner)],
                         cwd=inner, capture_output=True, text=True, timeout=300)
    assert "2 passed" in run.stdout, run.stdout[-3000:] + run.stderr[-2000:]  # the tests pass: the guard fails the run
    assert run.returncode == pytest.ExitCode.TESTS_FAILED, run.stdout[-3000:]
    (line,) = [line for line in run.stdout.splitlines() if "the tests left PostgreSQL running" in line]
    assert "recsys-leak-" in line and "(now stopped)" in line
    assert not [d for d in _postgres_data_dirs() if "recsys-leak-" in d], "the guard stopped the server"
