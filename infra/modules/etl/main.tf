# The Glue job that runs the project's own PySpark transform (recsys_platform.batch.engines.spark) over the
# MySQL source, through a Glue JDBC connection whose credentials live in Secrets Manager.

variable "project" {
  type = string
}

variable "lake_bucket" {
  type = string
}

variable "lake_bucket_arn" {
  type = string
}

variable "kms_key_arn" {
  type = string
}

variable "glue_script_path" {
  description = "The entry script built by `recsys-platform package` (dist/glue/ratings_ml_training.py)."
  type        = string
}

variable "source_jdbc_url" {
  type = string
}

variable "source_secret_arn" {
  type = string
}

variable "source_security_group_id" {
  type = string
}

variable "subnet_id" {
  type = string
}

variable "vpc_id" {
  type = string
}

data "aws_subnet" "glue" {
  id = var.subnet_id
}

resource "aws_s3_object" "script" {
  bucket      = var.lake_bucket
  key         = "_glue/ratings_ml_training.py"
  source      = var.glue_script_path
  source_hash = filemd5(var.glue_script_path)
  kms_key_id  = var.kms_key_arn
}

resource "aws_s3_object" "package" {
  bucket      = var.lake_bucket
  key         = "_glue/recsys_platform.zip"
  source      = replace(var.glue_script_path, "ratings_ml_training.py", "recsys_platform.zip")
  source_hash = filemd5(replace(var.glue_script_path, "ratings_ml_training.py", "recsys_platform.zip"))
  kms_key_id  = var.kms_key_arn
}

resource "aws_security_group" "glue" {
  #checkov:skip=CKV2_AWS_5:Attached through the Glue connection's physical_connection_requirements.
  name        = "${var.project}-glue"
  description = "Glue workers: to each other, to the source database, to S3 over HTTPS"
  vpc_id      = var.vpc_id
}

resource "aws_security_group_rule" "glue_self_ingress" {
  description       = "Glue workers talk to each other (required by Glue)"
  type              = "ingress"
  from_port         = 0
  to_port           = 65535
  protocol          = "tcp"
  self              = true
  security_group_id = aws_security_group.glue.id
}

resource "aws_security_group_rule" "glue_self_egress" {
  description       = "Glue workers talk to each other"
  type              = "egress"
  from_port         = 0
  to_port           = 65535
  protocol          = "tcp"
  self              = true
  security_group_id = aws_security_group.glue.id
}

resource "aws_security_group_rule" "glue_to_source" {
  description              = "MySQL source"
  type                     = "egress"
  from_port                = 3306
  to_port                  = 3306
  protocol                 = "tcp"
  security_group_id        = aws_security_group.glue.id
  source_security_group_id = var.source_security_group_id
}

resource "aws_security_group_rule" "source_from_glue" {
  description              = "Glue reads the source"
  type                     = "ingress"
  from_port                = 3306
  to_port                  = 3306
  protocol                 = "tcp"
  security_group_id        = var.source_security_group_id
  source_security_group_id = aws_security_group.glue.id
}

resource "aws_security_group_rule" "glue_https" {
  description       = "S3, Secrets Manager and CloudWatch through VPC endpoints or NAT"
  type              = "egress"
  from_port         = 443
  to_port           = 443
  protocol          = "tcp"
  cidr_blocks       = [data.aws_subnet.glue.cidr_block]
  security_group_id = aws_security_group.glue.id
}

resource "aws_glue_connection" "source" {
  name            = "${var.project}-classicmodels"
  connection_type = "JDBC"
  connection_properties = {
    JDBC_CONNECTION_URL = var.source_jdbc_url
    SECRET_ID           = var.source_secret_arn
    JDBC_ENFORCE_SSL    = "true"
  }
  physical_connection_requirements {
    availability_zone      = data.aws_subnet.glue.availability_zone
    security_group_id_list = [aws_security_group.glue.id]
    subnet_id              = var.subnet_id
  }
}

resource "aws_glue_security_configuration" "this" {
  name = "${var.project}-glue"
  encryption_configuration {
    cloudwatch_encryption {
      cloudwatch_encryption_mode = "SSE-KMS"
      kms_key_arn                = var.kms_key_arn
    }
    job_bookmarks_encryption {
      job_bookmarks_encryption_mode = "CSE-KMS"
      kms_key_arn                   = var.kms_key_arn
    }
    s3_encryption {
      s3_encryption_mode = "SSE-KMS"
      kms_key_arn        = var.kms_key_arn
    }
  }
}

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["glue.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "glue" {
  name               = "${var.project}-glue"
  assume_role_policy = data.aws_iam_policy_document.assume.json
}

data "aws_iam_policy_document" "glue" {
  #checkov:skip=CKV_AWS_111:ENI management for Glue in a VPC and GetConnection cannot be scoped to resources.
  #checkov:skip=CKV_AWS_356:ENI management for Glue in a VPC and GetConnection cannot be scoped to resources.
  statement {
    sid       = "Lake"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket"]
    resources = [var.lake_bucket_arn, "${var.lake_bucket_arn}/*"]
  }
  statement {
    sid       = "SourceSecret"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [var.source_secret_arn]
  }
  statement {
    sid       = "Kms"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey", "kms:Encrypt"]
    resources = [var.kms_key_arn]
  }
  statement {
    sid       = "Logs"
    actions   = ["logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents", "logs:AssociateKmsKey"]
    resources = ["arn:aws:logs:*:*:log-group:/aws-glue/*"]
  }
  statement {
    sid = "VpcNetworking"
    actions = ["ec2:CreateNetworkInterface", "ec2:DeleteNetworkInterface", "ec2:DescribeNetworkInterfaces",
      "ec2:DescribeVpcEndpoints", "ec2:DescribeRouteTables", "ec2:DescribeSubnets", "ec2:DescribeSecurityGroups",
    "ec2:DescribeVpcAttribute", "ec2:CreateTags", "ec2:DeleteTags"]
    resources = ["*"]
  }
  statement {
    sid       = "GlueConnection"
    actions   = ["glue:GetConnection"]
    resources = ["*"]
  }
}

resource "aws_iam_role_policy" "glue" {
  name   = "${var.project}-glue"
  role   = aws_iam_role.glue.id
  policy = data.aws_iam_policy_document.glue.json
}

resource "aws_glue_job" "ratings_ml_training" {
  name                   = "${var.project}-ratings-ml-training"
  role_arn               = aws_iam_role.glue.arn
  glue_version           = "4.0"
  worker_type            = "G.1X"
  number_of_workers      = 2
  timeout                = 60
  connections            = [aws_glue_connection.source.name]
  security_configuration = aws_glue_security_configuration.this.name
  command {
    name            = "glueetl"
    python_version  = "3"
    script_location = "s3://${var.lake_bucket}/${aws_s3_object.script.key}"
  }
  default_arguments = {
    "--extra-py-files"                   = "s3://${var.lake_bucket}/${aws_s3_object.package.key}"
    "--additional-python-modules"        = "sqlalchemy>=2.0,pymysql>=1.1,dagster-pipes==1.13.27"
    "--RECSYS_LAKE_URL"                  = "s3://${var.lake_bucket}"
    "--RECSYS_SOURCE_SECRET_ARN"         = var.source_secret_arn
    "--RECSYS_SOURCE_JDBC_URL"           = var.source_jdbc_url
    "--RECSYS_JDBC_DRIVER"               = "com.mysql.cj.jdbc.Driver" # MySQL Connector/J, on Glue 4.0's classpath
    "--enable-continuous-cloudwatch-log" = "true"
    "--enable-metrics"                   = "true"
  }
}

output "job_name" {
  value = aws_glue_job.ratings_ml_training.name
}

output "job_arn" {
  value = aws_glue_job.ratings_ml_training.arn
}
