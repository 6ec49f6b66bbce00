# The platform's one image on ECS (infra/modules/orchestration): the Dagster webserver, the daemon,
# the code location server, and every run (EcsRunLauncher starts `dagster api execute_run` in it).
# Build from the repository root:  docker build -f infra/platform.Dockerfile -t <ecr-repo>:<tag> .
# It installs the project as pyproject.toml pins it (the Dagster set exactly, like the Lambda
# image its own requirements); tests/test_infra_apply.py installs the same into a clean venv and
# runs each role's command there. No JVM: on AWS the training data is built by the Glue job.
#checkov:skip=CKV_DOCKER_2:ECS checks each role its own way (the load balancer probes the webserver's /server_info; the daemon heartbeats into the instance); one HEALTHCHECK cannot serve the four roles.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 DAGSTER_HOME=/opt/dagster/home RECSYS_HOME=/opt/dagster/recsys
COPY pyproject.toml README.md workspace.yaml /opt/recsys/
COPY recsys_platform/ /opt/recsys/recsys_platform/
COPY lambdas/ /opt/recsys/lambdas/
RUN pip install --no-cache-dir /opt/recsys \
    && useradd --uid 10001 --create-home --home-dir /opt/dagster dagster \
    && mkdir -p /opt/dagster/home /opt/dagster/recsys \
    && chown -R dagster /opt/dagster
USER dagster
WORKDIR /opt/dagster
CMD ["dagster-webserver", "--help"]
