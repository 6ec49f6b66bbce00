"""Run the real Glue job on this machine: a stand-in for the AWS Glue *service's* launch only.

dagster-aws's `PipesGlueClient` drives a boto3 Glue client through four members:
`start_job_run`, `get_job_run`, `batch_stop_job_run` and `meta.region_name`. `LocalGlueClient`
answers them by running what Glue would run: the packaged entry point
(`recsys-platform package`: dist/glue/ratings_ml_training.py) as its own process, with the
package zip on the path (Glue's `--extra-py-files`), `--extra-jars` given to Spark, and the
arguments Glue passes a script: `--JOB_NAME`, `--JOB_RUN_ID`, the job's default arguments (what
infra/ sets) overlaid by the run's (the Pipes context and messages, the lake URL, the buckets).
The script then does exactly what it does on AWS: reads the source's secret from Secrets
Manager, the Pipes context from S3, writes the lake and its Pipes messages to S3 (an
S3-compatible endpoint here). Only the launch differs.

Selected by RECSYS_GLUE_LAUNCHER=local, with the job's default arguments in
RECSYS_GLUE_ARGUMENTS (a JSON object, as infra/'s `default_arguments`).
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

# Arguments Glue itself consumes; everything else reaches the script.
GLUE_OWN = {"--extra-py-files", "--extra-jars", "--additional-python-modules", "--enable-metrics",
            "--enable-continuous-cloudwatch-log", "--job-language", "--TempDir", "--job-bookmark-option"}


@dataclass
class _Run:
    job_name: str
    process: subprocess.Popen
    log_path: Path
    started: dt.datetime
    stopped: bool = False


@dataclass
class LocalGlueClient:
    """A Glue client whose job runs are local processes (see the module docstring)."""

    package_dir: Path
    default_arguments: dict[str, str] = field(default_factory=dict)
    endpoint_url: str = ""  # an AWS-compatible endpoint, given to the script as its setting (and to boto3)
    region: str = "us-east-1"
    runs: dict[str, _Run] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.package_dir = Path(self.package_dir)  # built by `recsys-platform package` (the resource does it)
        if not (self.package_dir / "glue" / "ratings_ml_training.py").exists():
            raise FileNotFoundError(f"no packaged Glue job in {self.package_dir}: run `recsys-platform package --out "
                                    f"{self.package_dir}`")
        self.meta = SimpleNamespace(region_name=self.region)

    def start_job_run(self, JobName: str, Arguments: dict[str, str] | None = None, **_) -> dict:  # noqa: N803 - boto3's names
        arguments = {**self.default_arguments, **(Arguments or {})}
        if self.endpoint_url:  # on AWS the endpoint is AWS itself; here the script is told where to go
            arguments["--AWS_ENDPOINT_URL"] = self.endpoint_url
        run_id = f"jr_{uuid.uuid4().hex}"
        script = self.package_dir / "glue" / "ratings_ml_training.py"
        argv = [sys.executable, str(script), "--JOB_NAME", JobName, "--JOB_RUN_ID", run_id]
        for key, value in arguments.items():
            if key not in GLUE_OWN:
                argv += [key, value]
        # The child inherits this process's environment (the AWS credentials), like Glue's role.
        env = {**os.environ,
               "PYTHONPATH": str(self.package_dir / "glue" / "recsys_platform.zip"),  # --extra-py-files
               "AWS_DEFAULT_REGION": self.region,
               # Spark's local Python workers: this interpreter, not whatever `python3` PATH finds
               "PYSPARK_PYTHON": sys.executable}
        if self.endpoint_url:
            env["AWS_ENDPOINT_URL"] = self.endpoint_url
        jars = arguments.get("--extra-jars", "")
        if jars:
            env["PYSPARK_SUBMIT_ARGS"] = f"--jars {jars} pyspark-shell"
        log_path = self.package_dir / f"{run_id}.log"
        with open(log_path, "w") as log:
            # cwd outside the repository; the zip comes first on the path, before any installed copy
            process = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT,
                                       cwd=str(self.package_dir))
        self.runs[run_id] = _Run(JobName, process, log_path, dt.datetime.now(dt.timezone.utc))
        return {"JobRunId": run_id}

    def get_job_run(self, JobName: str, RunId: str, **_) -> dict:  # noqa: N803
        run = self.runs[RunId]
        code = run.process.poll()
        state = "RUNNING" if code is None else "STOPPED" if run.stopped else "SUCCEEDED" if code == 0 else "FAILED"
        job_run = {"Id": RunId, "JobName": run.job_name, "JobRunState": state, "StartedOn": run.started}
        if state == "FAILED":
            tail = run.log_path.read_text(errors="replace").strip().splitlines()[-15:]
            job_run["ErrorMessage"] = f"exit code {code}; last lines of {run.log_path}:\n" + "\n".join(tail)
        return {"JobRun": job_run}

    def batch_stop_job_run(self, JobName: str, JobRunIds: list[str]) -> dict:  # noqa: N803
        stopped = []
        for run_id in JobRunIds:
            run = self.runs.get(run_id)
            if run is not None and run.process.poll() is None:
                run.stopped = True
                run.process.terminate()
                stopped.append({"JobName": JobName, "JobRunId": run_id})
        return {"SuccessfulSubmissions": stopped, "Errors": []}
