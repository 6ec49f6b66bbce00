# The image both Lambdas run (the handler is chosen per function by image_config.command).
# Build from the repository root:  docker build -f infra/lambda.Dockerfile -t <ecr-repo>:<tag> .
# The dependencies are what serving imports (infra/lambda-requirements.txt: numpy, psycopg, boto3,
# FastAPI, Mangum; about 124 MB installed, reported by `recsys-platform package`).
#checkov:skip=CKV_DOCKER_2:Lambda runs the image through its runtime API, one invocation at a time; there is no long-running server for a HEALTHCHECK to probe (Lambda ignores HEALTHCHECK).
#checkov:skip=CKV_DOCKER_3:Lambda starts the container as its own unprivileged sandbox user whatever USER says; the base image's default is what AWS supports.
FROM public.ecr.aws/lambda/python:3.11
COPY infra/lambda-requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir -r /tmp/requirements.txt
COPY dist/lambda-src/ ${LAMBDA_TASK_ROOT}/
CMD ["lambdas.model_inference.handler.lambda_handler"]
