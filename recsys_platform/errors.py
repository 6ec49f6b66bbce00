"""The platform's error types: each names what is wrong and where, never a secret."""

from __future__ import annotations


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
