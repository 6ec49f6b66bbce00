"""Runs the CLI executes in its own process that the Dagster UI treats as its own.

`JobDefinition.execute_in_process` records runs without a code-location origin: the UI's
Overview timeline (which groups runs by code location) leaves them out, and "Re-execute" warns
that it cannot find their job. The public ways to give a run that origin (the webserver's
GraphQL, `dagster job launch`) start a new process per run that loads the code location
(about 6 s each here), which the demo cannot afford four or five times.

So this creates each run the way the webserver does, with the origin of the code location in
`workspace.yaml` (`recsys_platform`, repository `__repository__`), and executes it here with the
in-process executor, through Dagster's own run-worker path (`create_run_for_job` +
`execute_run`, what `dagster api execute_run` calls). Those two are not marked public in
Dagster 1.13: they are imported only here, and `tests/test_ui_browser.py` checks the origin, the
timeline and re-execution through the webserver, so an upgrade that changes them fails a test,
not a user.
"""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg

# The code location's name in workspace.yaml (tests/test_cli.py checks they agree).
CODE_LOCATION = "recsys_platform"
DEFINITIONS_MODULE = "recsys_platform.definitions"
IN_PROCESS = {"execution": {"config": {"in_process": {}}}}


def code_location_origin():
    from dagster._core.workspace.load import location_origin_from_module_name

    return location_origin_from_module_name(DEFINITIONS_MODULE, attribute=None, working_directory=None,
                                            location_name=CODE_LOCATION)


def execute_as_location_run(defs: dg.Definitions, job_name: str, instance: dg.DagsterInstance,
                            run_config: Mapping | None = None, tags: Mapping[str, str] | None = None,
                            partition_key: str | None = None) -> dg.ExecutionResult:
    """Execute `job_name` of `defs` in this process as a run of the `recsys_platform` location."""
    from dagster._core.definitions.job_base import InMemoryJob
    from dagster._core.definitions.repository_definition import SINGLETON_REPOSITORY_NAME
    from dagster._core.execution.api import execute_run
    from dagster._core.remote_origin import RemoteRepositoryOrigin

    job_def = defs.resolve_job_def(job_name)
    run_tags = {**job_def.run_tags, **(tags or {})}
    if partition_key is not None:
        run_tags.update(job_def.get_tags_for_partition_key(partition_key, selected_asset_keys=None))
    origin = RemoteRepositoryOrigin(code_location_origin(), SINGLETON_REPOSITORY_NAME).get_job_origin(job_name)
    run = instance.create_run_for_job(job_def, run_config={**IN_PROCESS, **(run_config or {})}, tags=run_tags,
                                      remote_job_origin=origin)
    return execute_run(InMemoryJob(job_def), run, instance)
