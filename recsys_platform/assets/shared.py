"""What every domain's definitions share: the owning team, the unfinished run states, and a logger that writes a run's events to a file."""

from __future__ import annotations

import logging
from pathlib import Path

import dagster as dg

OWNERS = ["team:data-platform"]
# A run in one of these states may still write: a schedule or sensor that must not overlap it waits.
UNFINISHED = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
              dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
LOG_FORMAT = "%(asctime)s %(levelname)s %(message)s"


@dg.logger(
    config_schema={"path": dg.Field(str, description="the log file (appended to; its folder is created)"),
                   "log_level": dg.Field(str, default_value="DEBUG", is_required=False)},
    description="Writes the run's Dagster events to a file (the demo keeps the terminal for its own summary).",
)
def file_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    path = Path(init_context.logger_config["path"])
    path.parent.mkdir(parents=True, exist_ok=True)
    logger = logging.Logger(f"recsys.dagster.{path}", level=init_context.logger_config["log_level"])
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logger.addHandler(handler)
    return logger


# A run with no logger config (a launch from the UI, the daemon) logs to the console as usual.
LOGGERS = {"console": dg.colored_console_logger, "file": file_logger}
