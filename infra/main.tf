# The platform on AWS: three private buckets, the Glue job over the MySQL source, RDS PostgreSQL
# with pgvector, the streaming edge (Kinesis -> Firehose + transformation Lambda -> S3), and the
# orchestrator (Dagster on ECS Fargate, its instance on RDS PostgreSQL).

data "aws_caller_identity" "current" {}

resource "aws_kms_key" "platform" {
  description             = "${var.project}: buckets, stream, logs"
  enable_key_rotation     = true
  deletion_window_in_days = 30
  policy                  = data.aws_iam_policy_document.kms.json
}

data "aws_iam_policy_document" "kms" {
  #checkov:skip=CKV_AWS_111:A key policy names the key itself as "*"; access is limited to this account and CloudWatch Logs.
  #checkov:skip=CKV_AWS_356:A key policy names the key itself as "*"; access is limited to this account and CloudWatch Logs.
  #checkov:skip=CKV_AWS_109:A key policy names the key itself as "*"; access is limited to this account and CloudWatch Logs.
  statement {
    sid       = "AccountAdministers"
    actions   = ["kms:*"]
    resources = ["*"]
    principals {
      type        = "AWS"
      identifiers = ["arn:aws:iam::${data.aws_caller_identity.current.account_id}:root"]
    }
  }
  statement {
    sid       = "CloudWatchLogs"
    actions   = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
    resources = ["*"]
    principals {
      type        = "Service"
      identifiers = ["logs.${var.region}.amazonaws.com"]
    }
  }
}

module "buckets" {
  for_each    = toset(["lake", "ml-artifacts", "recommendations"])
  source      = "./modules/buckets"
  name        = "${var.project}-${each.key}-${data.aws_caller_identity.current.account_id}"
  kms_key_arn = aws_kms_key.platform.arn
}

module "etl" {
  source                   = "./modules/etl"
  project                  = var.project
  lake_bucket              = module.buckets["lake"].bucket
  lake_bucket_arn          = module.buckets["lake"].arn
  kms_key_arn              = aws_kms_key.platform.arn
  glue_script_path         = "${var.package_dir}/glue/ratings_ml_training.py"
  source_jdbc_url          = var.source_jdbc_url
  source_secret_arn        = var.source_secret_arn
  source_security_group_id = var.source_security_group_id
  subnet_id                = var.private_subnet_ids[0]
  vpc_id                   = var.vpc_id
}

module "streaming" {
  source                 = "./modules/streaming"
  project                = var.project
  region                 = var.region
  kms_key_arn            = aws_kms_key.platform.arn
  artifacts_bucket       = module.buckets["ml-artifacts"].bucket
  artifacts_bucket_arn   = module.buckets["ml-artifacts"].arn
  recommendations_bucket = module.buckets["recommendations"].bucket
  recommendations_arn    = module.buckets["recommendations"].arn
  vpc_id                 = var.vpc_id
  subnet_ids             = var.private_subnet_ids
  image_uri              = var.lambda_image_uri
  kinesis_shards         = var.kinesis_shards
  reserved_concurrency   = var.lambda_reserved_concurrency
  buffer_seconds         = var.firehose_buffer_seconds
  buffer_mb              = var.firehose_buffer_mb
  log_retention_days     = var.log_retention_days
  vector_db_secret_arn   = module.vector_db.master_secret_arn
  vector_db_endpoint     = module.vector_db.endpoint
  # Lambda egress on 5432 goes to this group only; the database's ingress comes from the Lambdas'.
  vector_db_security_group_id = module.vector_db.security_group_id
  route_table_ids             = var.private_route_table_ids
  processor_buffer_mb         = var.processor_buffer_mb
  serving_rules               = var.serving_rules
}

module "vector_db" {
  source                     = "./modules/vector_db"
  project                    = var.project
  vpc_id                     = var.vpc_id
  subnet_ids                 = var.private_subnet_ids
  instance_class             = var.db_instance_class
  deletion_protection        = var.db_deletion_protection
  kms_key_arn                = aws_kms_key.platform.arn
  allowed_security_group_ids = [module.streaming.lambda_security_group_id, module.orchestration.task_security_group_id]
}

module "orchestration" {
  source                      = "./modules/orchestration"
  project                     = var.project
  region                      = var.region
  vpc_id                      = var.vpc_id
  subnet_ids                  = var.private_subnet_ids
  kms_key_arn                 = aws_kms_key.platform.arn
  log_retention_days          = var.log_retention_days
  image_uri                   = var.platform_image_uri
  certificate_arn             = var.webserver_certificate_arn
  webserver_allowed_cidrs     = var.webserver_allowed_cidrs
  deletion_protection         = var.db_deletion_protection
  database_endpoint           = module.vector_db.endpoint
  database_secret_arn         = module.vector_db.master_secret_arn
  bucket_arns                 = [for b in module.buckets : b.arn]
  glue_job_arn                = module.etl.job_arn
  read_secret_arns            = [var.source_secret_arn, module.vector_db.master_secret_arn]
  vector_db_security_group_id = module.vector_db.security_group_id
  source_security_group_id    = var.source_security_group_id
  endpoints_security_group_id = module.streaming.endpoints_security_group_id
  s3_prefix_list_id           = module.streaming.s3_prefix_list_id
  # The platform's settings for the code server and the runs: the AWS profile (docs/deploy.md).
  environment = {
    RECSYS_HOME                = "/opt/dagster/recsys"
    RECSYS_LAKE_URL            = "s3://${module.buckets["lake"].bucket}"
    RECSYS_ARTIFACTS_URL       = "s3://${module.buckets["ml-artifacts"].bucket}"
    RECSYS_RECOMMENDATIONS_URL = "s3://${module.buckets["recommendations"].bucket}"
    RECSYS_STREAM              = "kinesis://${module.streaming.stream_name}"
    RECSYS_GLUE_JOB            = module.etl.job_name
    RECSYS_PIPES_BUCKET        = module.buckets["lake"].bucket
    RECSYS_SOURCE_JDBC_URL     = var.source_jdbc_url
    RECSYS_SOURCE_SECRET_ARN   = var.source_secret_arn
    RECSYS_VECTOR_SECRET_ARN   = module.vector_db.master_secret_arn
    RECSYS_VECTOR_HOST         = module.vector_db.endpoint
    RECSYS_VECTOR_DB           = "recsys"
    RECSYS_RULES               = var.serving_rules
    AWS_REGION                 = var.region
  }
}
