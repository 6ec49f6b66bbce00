"""The platform's error types: each names what is wrong and where, never a secret."""

from __future__ import annotations

import errno


class RecsysError(Exception):
    """Base class for errors a user can act on; the message is meant to be shown as is."""


class ConfigError(RecsysError):
    """A setting is missing or malformed."""


class SourceUnavailableError(RecsysError):
    """The source database cannot be reached (the message carries the masked URL)."""


class SourceSchemaError(RecsysError):
    """A source table or column is missing or has a type the pipeline cannot use."""


class DataQualityError(RecsysError):
    """Source rows break the training-data contract; nothing was published."""

    def __init__(self, message: str, violations: list[dict] | None = None):
        super().__init__(message)
        self.violations = violations or []


class RunFailedError(RecsysError):
    """A Dagster run of the platform failed; the message carries the step's reason."""


class DiskFullError(RecsysError):
    """A write found no space left on its disk; what was being written was removed, not half-written."""


FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)  # a quota counts as full


def disk_full_in(error: BaseException) -> OSError | None:
    """The OSError saying a disk is full in `error` or in what it wraps, else None."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if isinstance(error, OSError) and error.errno in FULL_ERRNOS:
            return error
        error = error.__cause__ or error.__context__
    return None


def disk_full(path: str, error: OSError) -> DiskFullError:
    return DiskFullError(f"the disk holding {path} is full ({error.strerror}); nothing was half-written: free "
                         "space there, or point the setting that names that place (RECSYS_HOME or a RECSYS_*_URL) "
                         "at another disk, and run again")
