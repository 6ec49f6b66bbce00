# Kinesis stream -> Firehose (stream transformation Lambda as processor) -> recommendations bucket,
# with the model inference Lambda in the VPC next to the vector database.

variable "project" {
  type = string
}

variable "region" {
  type = string
}

variable "kms_key_arn" {
  type = string
}

variable "artifacts_bucket" {
  type = string
}

variable "artifacts_bucket_arn" {
  type = string
}

variable "recommendations_bucket" {
  type = string
}

variable "recommendations_arn" {
  type = string
}

variable "vpc_id" {
  type = string
}

variable "subnet_ids" {
  type = list(string)
}

variable "image_uri" {
  description = "The Lambda image (infra/lambda.Dockerfile) in the ECR repository, by digest or immutable tag."
  type        = string
}

variable "kinesis_shards" {
  type = number
}

variable "reserved_concurrency" {
  type = number
}

variable "buffer_seconds" {
  type = number
}

variable "buffer_mb" {
  type = number
}

variable "log_retention_days" {
  type = number
}

variable "vector_db_secret_arn" {
  type = string
}

variable "vector_db_endpoint" {
  type = string
}

variable "vector_db_security_group_id" {
  description = "The vector database's security group: the only PostgreSQL destination of the Lambdas."
  type        = string
}

variable "route_table_ids" {
  description = "Route tables of the private subnets (for the S3 gateway endpoint)."
  type        = list(string)
}

variable "processor_buffer_mb" {
  description = "The transformation's buffer: its worst-case response must fit Lambda's 6 MB (see docs/streaming.md)."
  type        = number
}

variable "serving_rules" {
  description = "RECSYS_RULES for both functions: the serving rules' defaults, a JSON object."
  type        = string
}

locals {
  transformation_name = "${var.project}-stream-transformation"
  inference_name      = "${var.project}-model-inference"
}

# -- the stream ----------------------------------------------------------------------------------
resource "aws_kinesis_stream" "events" {
  name             = "${var.project}-activity"
  shard_count      = var.kinesis_shards > 0 ? var.kinesis_shards : null
  retention_period = 24
  encryption_type  = "KMS"
  kms_key_id       = var.kms_key_arn
  stream_mode_details {
    stream_mode = var.kinesis_shards > 0 ? "PROVISIONED" : "ON_DEMAND"
  }
}

# -- the Lambdas (one container image, two handlers) ----------------------------------------------
resource "aws_ecr_repository" "lambda" {
  name                 = "${var.project}-lambda"
  image_tag_mutability = "IMMUTABLE"
  image_scanning_configuration {
    scan_on_push = true
  }
  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = var.kms_key_arn
  }
}

resource "aws_security_group" "lambda" {
  name        = "${var.project}-lambdas"
  description = "The inference and transformation Lambdas: PostgreSQL to the vector database, HTTPS to the VPC endpoints"
  vpc_id      = var.vpc_id
}

resource "aws_security_group_rule" "lambda_to_database" {
  description              = "The vector database, and nothing else on 5432"
  type                     = "egress"
  from_port                = 5432
  to_port                  = 5432
  protocol                 = "tcp"
  security_group_id        = aws_security_group.lambda.id
  source_security_group_id = var.vector_db_security_group_id
}

resource "aws_security_group_rule" "lambda_to_endpoints" {
  description              = "Secrets Manager and Lambda through their interface endpoints"
  type                     = "egress"
  from_port                = 443
  to_port                  = 443
  protocol                 = "tcp"
  security_group_id        = aws_security_group.lambda.id
  source_security_group_id = aws_security_group.endpoints.id
}

resource "aws_security_group_rule" "lambda_to_s3" {
  description       = "S3 (the artifacts bucket) through the gateway endpoint"
  type              = "egress"
  from_port         = 443
  to_port           = 443
  protocol          = "tcp"
  security_group_id = aws_security_group.lambda.id
  prefix_list_ids   = [aws_vpc_endpoint.s3.prefix_list_id]
}

# -- the VPC endpoints the Lambdas need (no NAT, no route to the internet) -------------------------
resource "aws_security_group" "endpoints" {
  name        = "${var.project}-endpoints"
  description = "Interface endpoints: HTTPS from the Lambdas only"
  vpc_id      = var.vpc_id
}

resource "aws_security_group_rule" "endpoints_from_lambdas" {
  description              = "HTTPS from the Lambdas"
  type                     = "ingress"
  from_port                = 443
  to_port                  = 443
  protocol                 = "tcp"
  security_group_id        = aws_security_group.endpoints.id
  source_security_group_id = aws_security_group.lambda.id
}

resource "aws_vpc_endpoint" "interface" {
  for_each            = toset(["secretsmanager", "lambda"]) # the DSN secret; the transformation invokes inference
  vpc_id              = var.vpc_id
  service_name        = "com.amazonaws.${var.region}.${each.key}"
  vpc_endpoint_type   = "Interface"
  subnet_ids          = var.subnet_ids
  security_group_ids  = [aws_security_group.endpoints.id]
  private_dns_enabled = true
}

resource "aws_vpc_endpoint" "s3" {
  vpc_id            = var.vpc_id
  service_name      = "com.amazonaws.${var.region}.s3"
  vpc_endpoint_type = "Gateway"
  route_table_ids   = var.route_table_ids
}

data "aws_iam_policy_document" "lambda_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["lambda.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "lambda_common" {
  #checkov:skip=CKV_AWS_111:Lambda VPC networking (ENI) actions cannot be scoped to resources.
  #checkov:skip=CKV_AWS_356:Lambda VPC networking (ENI) actions cannot be scoped to resources.
  statement {
    sid       = "Logs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["arn:aws:logs:${var.region}:*:log-group:/aws/lambda/${var.project}-*:*"]
  }
  statement {
    sid = "VpcNetworking"
    actions = ["ec2:CreateNetworkInterface", "ec2:DescribeNetworkInterfaces", "ec2:DeleteNetworkInterface",
    "ec2:AssignPrivateIpAddresses", "ec2:UnassignPrivateIpAddresses"]
    resources = ["*"]
  }
}

data "aws_iam_policy_document" "inference" {
  source_policy_documents = [data.aws_iam_policy_document.lambda_common.json]
  statement {
    sid       = "ReadArtifacts"
    actions   = ["s3:GetObject", "s3:ListBucket"]
    resources = [var.artifacts_bucket_arn, "${var.artifacts_bucket_arn}/*"]
  }
  statement {
    sid       = "VectorDbSecret"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [var.vector_db_secret_arn]
  }
  statement {
    sid       = "Kms"
    actions   = ["kms:Decrypt"]
    resources = [var.kms_key_arn]
  }
}

data "aws_iam_policy_document" "transformation" {
  source_policy_documents = [data.aws_iam_policy_document.lambda_common.json]
  statement {
    sid       = "InvokeInference"
    actions   = ["lambda:InvokeFunction"]
    resources = [aws_lambda_function.this["inference"].arn]
  }
}

resource "aws_iam_role" "inference" {
  name               = local.inference_name
  assume_role_policy = data.aws_iam_policy_document.lambda_assume.json
}

resource "aws_iam_role_policy" "inference" {
  name   = local.inference_name
  role   = aws_iam_role.inference.id
  policy = data.aws_iam_policy_document.inference.json
}

resource "aws_iam_role" "transformation" {
  name               = local.transformation_name
  assume_role_policy = data.aws_iam_policy_document.lambda_assume.json
}

resource "aws_iam_role_policy" "transformation" {
  name   = local.transformation_name
  role   = aws_iam_role.transformation.id
  policy = data.aws_iam_policy_document.transformation.json
}

locals {
  # The two functions share the image, the network, the DLQ and the settings; they differ here.
  functions = {
    inference = {
      name    = local.inference_name
      role    = aws_iam_role.inference.arn
      command = "lambdas.model_inference.handler.lambda_handler"
      memory  = 1024
      timeout = 60
      environment = {
        RECSYS_ARTIFACTS_URL     = "s3://${var.artifacts_bucket}"
        RECSYS_VECTOR_SECRET_ARN = var.vector_db_secret_arn
        RECSYS_VECTOR_HOST       = var.vector_db_endpoint
        RECSYS_VECTOR_DB         = "recsys"
        RECSYS_TOP_K             = "5"
        RECSYS_RULES             = var.serving_rules
      }
    }
    transformation = {
      name    = local.transformation_name
      role    = aws_iam_role.transformation.arn
      command = "lambdas.stream_transformation.handler.lambda_handler"
      memory  = 512
      timeout = 120
      environment = {
        RECSYS_INFERENCE_FUNCTION = local.inference_name
        RECSYS_TOP_K              = "5"
        RECSYS_RULES              = var.serving_rules
      }
    }
  }
}

resource "aws_cloudwatch_log_group" "lambda" {
  for_each          = local.functions
  name              = "/aws/lambda/${each.value.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
}

resource "aws_sqs_queue" "lambda_dlq" {
  name              = "${var.project}-lambda-dlq"
  kms_master_key_id = var.kms_key_arn
}

resource "aws_lambda_function" "this" {
  #checkov:skip=CKV_AWS_272:Code signing applies to zip packages; the image is pinned in ECR (immutable tags, scanned).
  for_each                       = local.functions
  function_name                  = each.value.name
  role                           = each.value.role
  package_type                   = "Image"
  image_uri                      = var.image_uri
  memory_size                    = each.value.memory
  timeout                        = each.value.timeout
  reserved_concurrent_executions = var.reserved_concurrency
  kms_key_arn                    = var.kms_key_arn
  vpc_config {
    subnet_ids         = var.subnet_ids
    security_group_ids = [aws_security_group.lambda.id]
  }
  tracing_config {
    mode = "Active"
  }
  dead_letter_config {
    target_arn = aws_sqs_queue.lambda_dlq.arn
  }
  environment {
    variables = each.value.environment
  }
  image_config {
    command = [each.value.command]
  }
  depends_on = [aws_cloudwatch_log_group.lambda]
}

data "aws_iam_policy_document" "dlq" {
  statement {
    actions   = ["sqs:SendMessage"]
    resources = [aws_sqs_queue.lambda_dlq.arn]
  }
}

resource "aws_iam_role_policy" "dlq" {
  for_each = { inference = aws_iam_role.inference.id, transformation = aws_iam_role.transformation.id }
  name     = "${var.project}-${each.key}-dlq"
  role     = each.value
  policy   = data.aws_iam_policy_document.dlq.json
}

# -- Firehose ------------------------------------------------------------------------------------
data "aws_iam_policy_document" "firehose_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["firehose.amazonaws.com"]
    }
  }
}

data "aws_iam_policy_document" "firehose" {
  statement {
    sid       = "ReadStream"
    actions   = ["kinesis:DescribeStream", "kinesis:GetShardIterator", "kinesis:GetRecords", "kinesis:ListShards"]
    resources = [aws_kinesis_stream.events.arn]
  }
  statement {
    sid       = "WriteRecommendations"
    actions   = ["s3:AbortMultipartUpload", "s3:GetBucketLocation", "s3:GetObject", "s3:ListBucket", "s3:ListBucketMultipartUploads", "s3:PutObject"]
    resources = [var.recommendations_arn, "${var.recommendations_arn}/*"]
  }
  statement {
    sid       = "InvokeTransformation"
    actions   = ["lambda:InvokeFunction", "lambda:GetFunctionConfiguration"]
    resources = ["${aws_lambda_function.this["transformation"].arn}:*", aws_lambda_function.this["transformation"].arn]
  }
  statement {
    sid       = "Kms"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [var.kms_key_arn]
  }
  statement {
    sid       = "Logs"
    actions   = ["logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.firehose.arn}:*"]
  }
}

resource "aws_iam_role" "firehose" {
  name               = "${var.project}-firehose"
  assume_role_policy = data.aws_iam_policy_document.firehose_assume.json
}

resource "aws_iam_role_policy" "firehose" {
  name   = "${var.project}-firehose"
  role   = aws_iam_role.firehose.id
  policy = data.aws_iam_policy_document.firehose.json
}

resource "aws_cloudwatch_log_group" "firehose" {
  name              = "/aws/kinesisfirehose/${var.project}-recommendations"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
}

resource "aws_cloudwatch_log_stream" "firehose" {
  name           = "S3Delivery"
  log_group_name = aws_cloudwatch_log_group.firehose.name
}

resource "aws_kinesis_firehose_delivery_stream" "recommendations" {
  name        = "${var.project}-recommendations"
  destination = "extended_s3"
  kinesis_source_configuration {
    kinesis_stream_arn = aws_kinesis_stream.events.arn
    role_arn           = aws_iam_role.firehose.arn
  }
  extended_s3_configuration {
    role_arn            = aws_iam_role.firehose.arn
    bucket_arn          = var.recommendations_arn
    prefix              = "!{timestamp:yyyy/MM/dd/HH}/"
    error_output_prefix = "!{firehose:error-output-type}/!{timestamp:yyyy/MM/dd/HH}/"
    buffering_interval  = var.buffer_seconds
    buffering_size      = var.buffer_mb
    kms_key_arn         = var.kms_key_arn
    cloudwatch_logging_options {
      enabled         = true
      log_group_name  = aws_cloudwatch_log_group.firehose.name
      log_stream_name = aws_cloudwatch_log_stream.firehose.name
    }
    processing_configuration {
      enabled = true
      processors {
        type = "Lambda"
        parameters {
          parameter_name  = "LambdaArn"
          parameter_value = "${aws_lambda_function.this["transformation"].arn}:$LATEST"
        }
        parameters {
          parameter_name  = "BufferSizeInMBs"
          parameter_value = tostring(var.processor_buffer_mb)
        }
        parameters {
          parameter_name  = "BufferIntervalInSeconds"
          parameter_value = "60"
        }
        # Firehose retries a failed invocation NumberOfRetries times (default 3) before the batch
        # goes to processing-failed/; more retries ride out a short database outage, as the local
        # runtime's 60 s of retries do (docs/streaming.md).
        parameters {
          parameter_name  = "NumberOfRetries"
          parameter_value = "10"
        }
      }
    }
  }
}

output "lambda_repository_url" {
  value = aws_ecr_repository.lambda.repository_url
}

output "stream_name" {
  value = aws_kinesis_stream.events.name
}

# The lab's HTTP client calls the inference routes here, signing with SigV4 (docs/deploy.md).
resource "aws_lambda_function_url" "inference" {
  function_name      = aws_lambda_function.this["inference"].function_name
  authorization_type = "AWS_IAM"
}

output "inference_function_url" {
  value = aws_lambda_function_url.inference.function_url
}

output "lambda_security_group_id" {
  value = aws_security_group.lambda.id
}

output "delivery_stream_name" {
  value = aws_kinesis_firehose_delivery_stream.recommendations.name
}

output "endpoints_security_group_id" {
  description = "The interface endpoints' group (Secrets Manager, Lambda): other tasks may be let in on 443."
  value       = aws_security_group.endpoints.id
}

output "s3_prefix_list_id" {
  value = aws_vpc_endpoint.s3.prefix_list_id
}
