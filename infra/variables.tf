variable "project" {
  description = "Name prefix of every resource."
  type        = string
  default     = "recsys"
}

variable "region" {
  description = "AWS region."
  type        = string
  default     = "us-east-1"
}

variable "vpc_id" {
  description = "VPC of the database, the Glue connection and the Lambdas."
  type        = string
}

variable "private_subnet_ids" {
  description = "Private subnets (at least two, in different zones) for RDS, Glue and the Lambdas."
  type        = list(string)
}

variable "private_route_table_ids" {
  description = "Route tables of the private subnets: the S3 gateway endpoint the Lambdas use is added to them."
  type        = list(string)
}

variable "processor_buffer_mb" {
  description = "Firehose's buffer for the transformation Lambda (0.2-3 MB). 0.6: the worst case (the smallest valid events, 8.4x expansion at top-k 5) answers within Lambda's 6 MB; see docs/streaming.md before raising it or RECSYS_TOP_K."
  type        = number
  default     = 0.6
}

variable "serving_rules" {
  description = "The serving rules' defaults for both Lambdas (RECSYS_RULES, a JSON object: exclude_bought, product_lines, exclude_product_lines, min_price, max_price, in_stock_only); {} keeps the protective defaults (nothing out of stock). An event's rules field changes them per request."
  type        = string
  default     = "{}"

  validation {
    condition     = can(keys(jsondecode(var.serving_rules)))
    error_message = "The serving_rules value must be a JSON object, e.g. {\"exclude_bought\": true}."
  }
}

variable "source_jdbc_url" {
  description = "JDBC URL of the MySQL classicmodels source, e.g. jdbc:mysql://host:3306/classicmodels."
  type        = string
}

variable "source_secret_arn" {
  description = "Secrets Manager secret holding the source's {username, password}; created outside Terraform."
  type        = string
}

variable "source_security_group_id" {
  description = "Security group of the source database; Glue's group is allowed into it."
  type        = string
}

variable "lambda_image_uri" {
  description = "The Lambda image built from infra/lambda.Dockerfile and pushed to the stack's ECR repository."
  type        = string
}

variable "package_dir" {
  description = "Folder with the artifacts built by `recsys-platform package` (the Glue script and package)."
  type        = string
  default     = "../dist"
}

variable "kinesis_shards" {
  description = "0: an on-demand stream; N > 0: a provisioned stream with N shards."
  type        = number
  default     = 0
}

variable "db_instance_class" {
  type    = string
  default = "db.t4g.medium"
}

variable "db_deletion_protection" {
  type    = bool
  default = true
}

variable "lambda_reserved_concurrency" {
  description = "Reserved concurrency of each Lambda (bounds database connections)."
  type        = number
  default     = 10
}

variable "firehose_buffer_seconds" {
  type    = number
  default = 60
}

variable "firehose_buffer_mb" {
  type    = number
  default = 5
}

variable "log_retention_days" {
  type    = number
  default = 365
}

variable "platform_image_uri" {
  description = "The platform image built from infra/platform.Dockerfile (Dagster's webserver, daemon, code server and runs), by digest or immutable tag."
  type        = string
}

variable "webserver_certificate_arn" {
  description = "ACM certificate of the Dagster UI's internal HTTPS load balancer."
  type        = string
}

variable "webserver_allowed_cidrs" {
  description = "Address ranges (a VPN, a bastion) that may reach the Dagster UI's internal load balancer."
  type        = list(string)
}
