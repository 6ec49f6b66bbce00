# RDS PostgreSQL 16 (pgvector 0.7+ is available as an extension), private, encrypted, with the
# master password managed by RDS in Secrets Manager (never in Terraform state or variables). It
# holds the vectors (database `recsys`) and the Dagster instance (database `dagster`, created by
# `recsys-platform ecs-instance` when the orchestrator first starts).

variable "project" {
  type = string
}

variable "vpc_id" {
  type = string
}

variable "subnet_ids" {
  type = list(string)
}

variable "instance_class" {
  type = string
}

variable "deletion_protection" {
  type = bool
}

variable "kms_key_arn" {
  type = string
}

variable "allowed_security_group_ids" {
  description = "Only these groups (the Lambdas', the Dagster tasks') may connect."
  type        = list(string)
}

resource "aws_db_subnet_group" "this" {
  name       = "${var.project}-vector-db"
  subnet_ids = var.subnet_ids
}

resource "aws_security_group" "db" {
  name        = "${var.project}-vector-db"
  description = "PostgreSQL + pgvector and the Dagster instance, reachable from the Lambdas and the Dagster tasks only"
  vpc_id      = var.vpc_id
}

resource "aws_security_group_rule" "from_lambdas" {
  count                    = length(var.allowed_security_group_ids)
  description              = "PostgreSQL from an allowed group (the Lambdas, the Dagster tasks)"
  type                     = "ingress"
  from_port                = 5432
  to_port                  = 5432
  protocol                 = "tcp"
  security_group_id        = aws_security_group.db.id
  source_security_group_id = var.allowed_security_group_ids[count.index]
}

resource "aws_db_parameter_group" "this" {
  name   = "${var.project}-vector-db"
  family = "postgres16"
  parameter {
    name  = "log_min_duration_statement"
    value = "1000"
  }
  parameter {
    name  = "rds.force_ssl"
    value = "1"
  }
}

resource "aws_db_instance" "this" {
  #checkov:skip=CKV_AWS_118:Enhanced monitoring needs its own IAM role; Performance Insights is on.
  #checkov:skip=CKV2_AWS_30:Query logging is set through log_min_duration_statement in the parameter group.
  identifier                          = "${var.project}-vector-db"
  engine                              = "postgres"
  engine_version                      = "16.4"
  instance_class                      = var.instance_class
  allocated_storage                   = 50
  max_allocated_storage               = 500
  storage_type                        = "gp3"
  storage_encrypted                   = true
  kms_key_id                          = var.kms_key_arn
  db_name                             = "recsys"
  username                            = "recsys_admin"
  manage_master_user_password         = true
  master_user_secret_kms_key_id       = var.kms_key_arn
  db_subnet_group_name                = aws_db_subnet_group.this.name
  vpc_security_group_ids              = [aws_security_group.db.id]
  parameter_group_name                = aws_db_parameter_group.this.name
  publicly_accessible                 = false
  multi_az                            = true
  backup_retention_period             = 7
  deletion_protection                 = var.deletion_protection
  skip_final_snapshot                 = false
  final_snapshot_identifier           = "${var.project}-vector-db-final"
  copy_tags_to_snapshot               = true
  auto_minor_version_upgrade          = true
  iam_database_authentication_enabled = true
  performance_insights_enabled        = true
  performance_insights_kms_key_id     = var.kms_key_arn
  enabled_cloudwatch_logs_exports     = ["postgresql", "upgrade"]
}

output "endpoint" {
  value = aws_db_instance.this.endpoint
}

output "master_secret_arn" {
  value = aws_db_instance.this.master_user_secret[0].secret_arn
}

output "security_group_id" {
  value = aws_security_group.db.id
}
