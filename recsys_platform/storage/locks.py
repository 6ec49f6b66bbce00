"""An exclusive lock held by one process at a time, on a file: `flock`, which the kernel releases
when its holder exits, however it exits (kill -9 included), so a crash never keeps it.

The file says who holds it (PID and since when), for the message the next process gets.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
from pathlib import Path

from recsys_platform.errors import RecsysError


class Busy(RecsysError):
    """Another process holds the lock."""


class ProcessLock:
    """`with ProcessLock(path, "demo", " on RECSYS_HOME=/x"):` raises `Busy` at once when another
    process holds `path`: "another demo is running on RECSYS_HOME=/x (pid N since T); <scope>"."""

    def __init__(self, path: str | Path, what: str, where: str = "",
                 scope: str = "one at a time (the lock goes with its process)"):
        self.path = Path(path)
        self.what, self.where, self.scope = what, where, scope
        self._file = None

    def __enter__(self) -> ProcessLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        f = open(self.path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise Busy(f"another {self.what} is running{self.where} ({holder}); {self.scope}") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} since {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}")
        f.flush()
        self._file = f
        return self

    def __exit__(self, *exc) -> None:
        if self._file is not None:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
