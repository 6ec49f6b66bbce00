"""The AWS profile's batch engine: the Glue job running `recsys_platform/deploy/glue_job.py`,
launched through dagster-aws's PipesGlueClient (context and messages through an S3 bucket)."""

from __future__ import annotations

import dagster as dg


class GlueBatchResource(dg.ConfigurableResource):
    """`job_name` empty: the batch runs on Spark in-process (the embedded default)."""

    job_name: str = ""
    pipes_bucket: str = ""
    endpoint_url: str = ""
    region: str = ""
    launcher: str = "aws"        # "local": deploy/local_glue.py runs the packaged script here
    arguments: dict[str, str] = {}  # the job's default arguments for the local launcher (infra/'s)
    work_dir: str = ""           # where the local launcher packages the job (at the run), and its logs

    @property
    def enabled(self) -> bool:
        return bool(self.job_name)

    def _clients(self):
        import boto3

        kwargs = {"endpoint_url": self.endpoint_url or None, "region_name": self.region or None}
        s3 = boto3.client("s3", **kwargs)
        if self.launcher == "local":
            from recsys_platform.deploy.local_glue import LocalGlueClient
            from recsys_platform.deploy.packaging import code_zip

            code_zip(self.work_dir)  # the job as `recsys-platform package` builds it, packaged for this run
            return LocalGlueClient(self.work_dir, dict(self.arguments), self.endpoint_url,
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
