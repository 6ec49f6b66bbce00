# The image both Lambdas run (the handler is chosen per function by image_config.command).
# Build from the repository root:  docker build -f infra/lambda.Dockerfile -t <ecr-repo>:<tag> .
# A zip cannot hold the dependencies (numpy, scipy, scikit-learn, pandas, pyarrow: > 250 MB).
FROM public.ecr.aws/lambda/python:3.11
COPY infra/lambda-requirements.txt /tmp/requirements.txt
RUN pip install --no-cache-dir -r /tmp/requirements.txt
COPY dist/lambda-src/ ${LAMBDA_TASK_ROOT}/
CMD ["lambdas.model_inference.handler.lambda_handler"]
