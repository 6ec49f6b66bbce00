"""The AWS profile's batch engine: the Glue job running `recsys_platform/glue_entry.py`, launched
through dagster-aws's PipesGlueClient (context and messages through an S3 bucket)."""

from __future__ import annotations

import dagster as dg


class GlueBatchResource(dg.ConfigurableResource):
    """`job_name` empty: the batch runs on Spark in-process (the embedded default)."""

    job_name: str = ""
    pipes_bucket: str = ""
    endpoint_url: str = ""
    region: str = ""
    launcher: str = "aws"        # "local": resources/local_glue.py runs the packaged script here
    arguments_json: str = ""     # the job's default arguments for the local launcher
    work_dir: str = ""           # the packaged job for the local launcher (definitions builds it), and its logs

    @property
    def enabled(self) -> bool:
        return bool(self.job_name)

    def _clients(self):
        import boto3

        kwargs = {"endpoint_url": self.endpoint_url or None, "region_name": self.region or None}
        s3 = boto3.client("s3", **kwargs)
        if self.launcher == "local":
            import json

            from recsys_platform.resources.local_glue import LocalGlueClient

            env = {"AWS_ENDPOINT_URL": self.endpoint_url} if self.endpoint_url else {}
            return LocalGlueClient(self.work_dir, json.loads(self.arguments_json or "{}"), env,
                                   region=self.region or "us-east-1"), s3
        return boto3.client("glue", **kwargs), s3

    def run(self, context, keys: list[str], arguments: dict[str, str]) -> dict:
        """Start the job for `keys`, wait, and return the metadata it reported (and the run's)."""
        from dagster_aws.pipes import PipesGlueClient, PipesS3ContextInjector, PipesS3MessageReader

        if not self.pipes_bucket:
            raise dg.Failure(description="RECSYS_PIPES_BUCKET is required with RECSYS_GLUE_JOB")
        glue, s3 = self._clients()
        client = PipesGlueClient(
            client=glue,
            context_injector=PipesS3ContextInjector(bucket=self.pipes_bucket, client=s3, key_prefix="_pipes/context"),
            message_reader=PipesS3MessageReader(bucket=self.pipes_bucket, client=s3, interval=2),
        )
        invocation = client.run(context=context, extras={"partition_keys": keys},
                                start_job_run_params={"JobName": self.job_name,
                                                      "Arguments": {f"--{k}": v for k, v in arguments.items()}})
        reported: dict = {}
        for result in invocation.get_results():
            reported.update(result.metadata or {})
        return {**invocation.metadata, **reported}
