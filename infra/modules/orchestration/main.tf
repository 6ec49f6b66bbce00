# The control plane: Dagster on ECS Fargate. The webserver (behind an internal HTTPS load
# balancer), the daemon and the code location server run as services from the platform's image;
# every run is an ECS task of its own task definition, started by dagster-aws's EcsRunLauncher; the
# instance (runs, events, schedules) is the database `dagster` on the platform's RDS PostgreSQL
# (one instance at the lab's size; `recsys-platform ecs-instance` creates the database on first
# start). Private subnets only; AWS APIs through VPC endpoints; least-privilege roles; KMS at rest,
# TLS in transit.

variable "project" {
  type = string
}

variable "region" {
  type = string
}

variable "vpc_id" {
  type = string
}

variable "subnet_ids" {
  description = "Private subnets for the tasks, the load balancer and the database (two zones at least)."
  type        = list(string)
}

variable "kms_key_arn" {
  type = string
}

variable "log_retention_days" {
  type = number
}

variable "image_uri" {
  description = "The platform image (infra/platform.Dockerfile) by digest or immutable tag."
  type        = string
}

variable "certificate_arn" {
  description = "ACM certificate of the webserver's internal HTTPS listener."
  type        = string
}

variable "webserver_allowed_cidrs" {
  description = "Address ranges (VPN, bastion) allowed to reach the internal load balancer on 443."
  type        = list(string)
}

variable "deletion_protection" {
  type = bool
}

variable "database_endpoint" {
  description = "The platform's RDS PostgreSQL (host:port): the instance is its database `dagster`."
  type        = string
}

variable "database_secret_arn" {
  description = "Its RDS-managed master secret: ECS injects the user and password into every Dagster container."
  type        = string
}

variable "bucket_arns" {
  description = "The lake, artifacts and recommendations buckets: runs read and write them, the code server lists them."
  type        = list(string)
}

variable "environment" {
  description = "The platform's RECSYS_* settings for the code server and the runs (buckets, stream, Glue, vector database)."
  type        = map(string)
}

variable "glue_job_arn" {
  type = string
}

variable "read_secret_arns" {
  description = "Secrets the code server and the runs read (the source's, the vector database's)."
  type        = list(string)
}

variable "vector_db_security_group_id" {
  description = "The database's group: the instance, and the vectors the runs load, on 5432 (its module lets the tasks in)."
  type        = string
}

variable "source_security_group_id" {
  description = "The MySQL source's group: the runs read the catalog on 3306 (a rule here lets them in)."
  type        = string
}

variable "endpoints_security_group_id" {
  description = "The existing interface endpoints' group (Secrets Manager): the tasks are let in on 443."
  type        = string
}

variable "s3_prefix_list_id" {
  description = "The S3 gateway endpoint's prefix list: the tasks' only way to S3."
  type        = string
}

locals {
  name         = "${var.project}-dagster"
  code_port    = 4000
  web_port     = 3000
  dagster_home = "/opt/dagster/home"
  code_host    = "code.${local.name}.internal"
  # Every container writes dagster.yaml from these (recsys-platform ecs-instance), so the
  # instance a process sees is the one the runs see (EcsRunLauncher passes it to them).
  instance_environment = {
    DAGSTER_HOME                   = local.dagster_home
    RECSYS_DAGSTER_PG_HOST         = var.database_endpoint
    RECSYS_ECS_CLUSTER             = aws_ecs_cluster.this.name
    RECSYS_ECS_RUN_TASK_DEFINITION = aws_ecs_task_definition.run.arn_without_revision
    RECSYS_ECS_SUBNETS             = join(",", var.subnet_ids)
    RECSYS_ECS_SECURITY_GROUPS     = aws_security_group.tasks.id
  }
  database_secrets = [
    { name = "RECSYS_DAGSTER_PG_USER", valueFrom = "${var.database_secret_arn}:username::" },
    { name = "RECSYS_DAGSTER_PG_PASSWORD", valueFrom = "${var.database_secret_arn}:password::" },
  ]
  grpc     = ["--grpc-host", local.code_host, "--grpc-port", tostring(local.code_port)]
  instance = "recsys-platform ecs-instance >/dev/null"
  services = {
    webserver = {
      command = ["sh", "-c", "${local.instance} && exec dagster-webserver -h 0.0.0.0 -p ${local.web_port} ${join(" ", local.grpc)}"]
      role    = aws_iam_role.this["webserver"].arn
      cpu     = 512
      memory  = 1024
      port    = local.web_port
    }
    daemon = {
      command = ["sh", "-c", "${local.instance} && exec dagster-daemon run ${join(" ", local.grpc)}"]
      role    = aws_iam_role.this["daemon"].arn
      cpu     = 512
      memory  = 1024
      port    = null
    }
    code = {
      command = ["sh", "-c", "${local.instance} && exec dagster code-server start -h 0.0.0.0 -p ${local.code_port} -m recsys_platform.definitions --location-name recsys_platform"]
      role    = aws_iam_role.this["run"].arn # sensors and schedules evaluate here: they read what the runs read
      cpu     = 1024
      memory  = 2048
      port    = local.code_port
    }
  }
}

# -- the image's repository, logs and the cluster -------------------------------------------------
resource "aws_ecr_repository" "platform" {
  name                 = "${var.project}-platform"
  image_tag_mutability = "IMMUTABLE"
  image_scanning_configuration {
    scan_on_push = true
  }
  encryption_configuration {
    encryption_type = "KMS"
    kms_key         = var.kms_key_arn
  }
}

resource "aws_cloudwatch_log_group" "this" {
  name              = "/ecs/${local.name}"
  retention_in_days = var.log_retention_days
  kms_key_id        = var.kms_key_arn
}

resource "aws_ecs_cluster" "this" {
  name = local.name
  setting {
    name  = "containerInsights"
    value = "enabled"
  }
}

# -- network --------------------------------------------------------------------------------------
resource "aws_security_group" "tasks" {
  name        = "${local.name}-tasks"
  description = "The Dagster webserver, daemon, code server and runs"
  vpc_id      = var.vpc_id
}

resource "aws_security_group_rule" "tasks_grpc_in" {
  description       = "gRPC of the code server, from the webserver and the daemon"
  type              = "ingress"
  from_port         = local.code_port
  to_port           = local.code_port
  protocol          = "tcp"
  security_group_id = aws_security_group.tasks.id
  self              = true
}

resource "aws_security_group_rule" "tasks_web_in" {
  description              = "The webserver, from the load balancer only"
  type                     = "ingress"
  from_port                = local.web_port
  to_port                  = local.web_port
  protocol                 = "tcp"
  security_group_id        = aws_security_group.tasks.id
  source_security_group_id = aws_security_group.alb.id
}

resource "aws_security_group_rule" "tasks_grpc_out" {
  description       = "To the gRPC of the code server"
  type              = "egress"
  from_port         = local.code_port
  to_port           = local.code_port
  protocol          = "tcp"
  security_group_id = aws_security_group.tasks.id
  self              = true
}

resource "aws_security_group_rule" "tasks_to_databases" {
  for_each = {
    vectors = { port = 5432, group = var.vector_db_security_group_id } # the instance and the vectors
    source  = { port = 3306, group = var.source_security_group_id }
  }
  description              = "The ${each.key} database of the platform"
  type                     = "egress"
  from_port                = each.value.port
  to_port                  = each.value.port
  protocol                 = "tcp"
  security_group_id        = aws_security_group.tasks.id
  source_security_group_id = each.value.group
}

resource "aws_security_group_rule" "source_from_tasks" {
  description              = "MySQL from the Dagster runs and code server (the catalog and the source versions)"
  type                     = "ingress"
  from_port                = 3306
  to_port                  = 3306
  protocol                 = "tcp"
  security_group_id        = var.source_security_group_id
  source_security_group_id = aws_security_group.tasks.id
}

resource "aws_security_group_rule" "tasks_to_endpoints" {
  for_each                 = { own = aws_security_group.endpoints.id, shared = var.endpoints_security_group_id }
  description              = "AWS APIs through the interface endpoints (${each.key})"
  type                     = "egress"
  from_port                = 443
  to_port                  = 443
  protocol                 = "tcp"
  security_group_id        = aws_security_group.tasks.id
  source_security_group_id = each.value
}

resource "aws_security_group_rule" "tasks_to_s3" {
  description       = "S3 through the gateway endpoint"
  type              = "egress"
  from_port         = 443
  to_port           = 443
  protocol          = "tcp"
  security_group_id = aws_security_group.tasks.id
  prefix_list_ids   = [var.s3_prefix_list_id]
}

resource "aws_security_group_rule" "shared_endpoints_from_tasks" {
  description              = "HTTPS from the Dagster tasks"
  type                     = "ingress"
  from_port                = 443
  to_port                  = 443
  protocol                 = "tcp"
  security_group_id        = var.endpoints_security_group_id
  source_security_group_id = aws_security_group.tasks.id
}

resource "aws_security_group" "endpoints" {
  name        = "${local.name}-endpoints"
  description = "Interface endpoints for ECS, ECR, logs, Glue and STS: HTTPS from the Dagster tasks only"
  vpc_id      = var.vpc_id
}

resource "aws_security_group_rule" "endpoints_from_tasks" {
  description              = "HTTPS from the Dagster tasks"
  type                     = "ingress"
  from_port                = 443
  to_port                  = 443
  protocol                 = "tcp"
  security_group_id        = aws_security_group.endpoints.id
  source_security_group_id = aws_security_group.tasks.id
}

resource "aws_vpc_endpoint" "interface" {
  # the daemon starts runs (ecs), tasks pull the image (ecr.api, ecr.dkr) and log (logs), runs
  # start the Glue job (glue) and SDKs resolve credentials (sts)
  for_each            = toset(["ecs", "ecr.api", "ecr.dkr", "logs", "glue", "sts"])
  vpc_id              = var.vpc_id
  service_name        = "com.amazonaws.${var.region}.${each.key}"
  vpc_endpoint_type   = "Interface"
  subnet_ids          = var.subnet_ids
  security_group_ids  = [aws_security_group.endpoints.id]
  private_dns_enabled = true
}

# -- the webserver's internal load balancer -------------------------------------------------------
resource "aws_security_group" "alb" {
  name        = "${local.name}-alb"
  description = "The internal load balancer of the webserver: HTTPS from the allowed ranges"
  vpc_id      = var.vpc_id
}

resource "aws_security_group_rule" "alb_in" {
  description       = "HTTPS from the allowed ranges (VPN, bastion)"
  type              = "ingress"
  from_port         = 443
  to_port           = 443
  protocol          = "tcp"
  security_group_id = aws_security_group.alb.id
  cidr_blocks       = var.webserver_allowed_cidrs
}

resource "aws_security_group_rule" "alb_to_webserver" {
  description              = "To the webserver tasks"
  type                     = "egress"
  from_port                = local.web_port
  to_port                  = local.web_port
  protocol                 = "tcp"
  security_group_id        = aws_security_group.alb.id
  source_security_group_id = aws_security_group.tasks.id
}

resource "aws_lb" "webserver" {
  #checkov:skip=CKV_AWS_91:Access logs need a bucket writable by the ELB account; the webserver's own logs go to CloudWatch.
  #checkov:skip=CKV2_AWS_28:Internal only, reachable from the allowed ranges: no WAF in front of it.
  name                       = "${local.name}-web"
  internal                   = true
  load_balancer_type         = "application"
  security_groups            = [aws_security_group.alb.id]
  subnets                    = var.subnet_ids
  drop_invalid_header_fields = true
  enable_deletion_protection = var.deletion_protection
}

resource "aws_lb_target_group" "webserver" {
  #checkov:skip=CKV_AWS_378:TLS ends at the internal load balancer; inside the private subnets the webserver speaks HTTP on 3000.
  name        = "${local.name}-web"
  port        = local.web_port
  protocol    = "HTTP"
  target_type = "ip"
  vpc_id      = var.vpc_id
  health_check {
    path    = "/server_info"
    matcher = "200"
  }
}

resource "aws_lb_listener" "https" {
  load_balancer_arn = aws_lb.webserver.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = var.certificate_arn
  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.webserver.arn
  }
}

# -- the code server's name (Cloud Map) -----------------------------------------------------------
resource "aws_service_discovery_private_dns_namespace" "this" {
  name = "${local.name}.internal"
  vpc  = var.vpc_id
}

resource "aws_service_discovery_service" "code" {
  name = "code"
  dns_config {
    namespace_id = aws_service_discovery_private_dns_namespace.this.id
    dns_records {
      ttl  = 10
      type = "A"
    }
  }
}

# -- roles ----------------------------------------------------------------------------------------
data "aws_iam_policy_document" "tasks_assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ecs-tasks.amazonaws.com"]
    }
  }
}

# What ECS itself needs to start a container: the image, the log stream, the injected secrets.
data "aws_iam_policy_document" "execution" {
  #checkov:skip=CKV_AWS_111:ecr:GetAuthorizationToken takes no resource.
  #checkov:skip=CKV_AWS_356:ecr:GetAuthorizationToken takes no resource.
  statement {
    sid       = "EcrLogin"
    actions   = ["ecr:GetAuthorizationToken"]
    resources = ["*"]
  }
  statement {
    sid       = "PullTheImage"
    actions   = ["ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability"]
    resources = [aws_ecr_repository.platform.arn]
  }
  statement {
    sid       = "Logs"
    actions   = ["logs:CreateLogStream", "logs:PutLogEvents"]
    resources = ["${aws_cloudwatch_log_group.this.arn}:*"]
  }
  statement {
    sid       = "InstanceDatabaseSecret"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = [var.database_secret_arn]
  }
  statement {
    sid       = "Kms"
    actions   = ["kms:Decrypt"]
    resources = [var.kms_key_arn]
  }
}

# Every process that loads the instance builds EcsRunLauncher, which reads the run task definition.
data "aws_iam_policy_document" "read_task_definitions" {
  #checkov:skip=CKV_AWS_111:ecs:DescribeTaskDefinition takes no resource.
  #checkov:skip=CKV_AWS_356:ecs:DescribeTaskDefinition takes no resource.
  statement {
    sid       = "ReadTaskDefinitions"
    actions   = ["ecs:DescribeTaskDefinition"]
    resources = ["*"]
  }
}

# The webserver and the daemon watch runs' tasks, and stop them (a run terminated from the UI).
data "aws_iam_policy_document" "watch_runs" {
  source_policy_documents = [data.aws_iam_policy_document.read_task_definitions.json]
  statement {
    sid       = "WatchAndStopRuns"
    actions   = ["ecs:DescribeTasks", "ecs:StopTask"]
    resources = ["arn:aws:ecs:${var.region}:*:task/${aws_ecs_cluster.this.name}/*"]
  }
}

# The runs (and the code server, whose sensors and schedules read the same stores).
data "aws_iam_policy_document" "run" {
  source_policy_documents = [data.aws_iam_policy_document.read_task_definitions.json]
  statement {
    sid       = "Buckets"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:ListBucket", "s3:GetBucketLocation"]
    resources = concat(var.bucket_arns, [for arn in var.bucket_arns : "${arn}/*"])
  }
  statement {
    sid       = "GlueJob"
    actions   = ["glue:StartJobRun", "glue:GetJobRun", "glue:GetJobRuns", "glue:BatchStopJobRun"]
    resources = [var.glue_job_arn]
  }
  statement {
    sid       = "Secrets"
    actions   = ["secretsmanager:GetSecretValue"]
    resources = var.read_secret_arns
  }
  statement {
    sid       = "Kms"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [var.kms_key_arn]
  }
}

# The daemon starts runs as tasks of the run task definition, watches and stops them, and hands
# them the run and execution roles (and no other).
data "aws_iam_policy_document" "daemon" {
  source_policy_documents = [data.aws_iam_policy_document.watch_runs.json]
  statement {
    sid       = "StartRuns"
    actions   = ["ecs:RunTask"]
    resources = ["${aws_ecs_task_definition.run.arn_without_revision}:*"]
    condition {
      test     = "ArnEquals"
      variable = "ecs:cluster"
      values   = [aws_ecs_cluster.this.arn]
    }
  }
  statement {
    sid       = "TagRuns"
    actions   = ["ecs:TagResource"]
    resources = ["arn:aws:ecs:${var.region}:*:task/${aws_ecs_cluster.this.name}/*"]
  }
  statement {
    sid       = "PassOnlyTheRunRoles"
    actions   = ["iam:PassRole"]
    resources = [aws_iam_role.this["run"].arn, aws_iam_role.this["execution"].arn]
  }
}

# One role per part, each with its own policy: execution (ECS itself), run (the runs and the code
# server), daemon and webserver.
locals {
  role_policies = {
    execution = data.aws_iam_policy_document.execution.json
    run       = data.aws_iam_policy_document.run.json
    daemon    = data.aws_iam_policy_document.daemon.json
    webserver = data.aws_iam_policy_document.watch_runs.json
  }
}

resource "aws_iam_role" "this" {
  # The names, not keys(local.role_policies): the daemon's policy names the run roles' ARNs.
  for_each           = toset(["execution", "run", "daemon", "webserver"])
  name               = "${local.name}-${each.key}"
  assume_role_policy = data.aws_iam_policy_document.tasks_assume.json
}

resource "aws_iam_role_policy" "this" {
  for_each = local.role_policies
  name     = "${local.name}-${each.key}"
  role     = aws_iam_role.this[each.key].id
  policy   = each.value
}

# -- task definitions and services ---------------------------------------------------------------
locals {
  container_common = {
    image                  = var.image_uri
    essential              = true
    readonlyRootFilesystem = false
    secrets                = local.database_secrets
    logConfiguration = {
      logDriver = "awslogs"
      options = {
        awslogs-group         = aws_cloudwatch_log_group.this.name
        awslogs-region        = var.region
        awslogs-stream-prefix = local.name
      }
    }
  }
}

resource "aws_ecs_task_definition" "run" {
  #checkov:skip=CKV_AWS_336:Runs write Dagster's compute logs and Spark/Arrow scratch files under the image's home; the image runs as an unprivileged user.
  family                   = "${local.name}-run"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = 1024
  memory                   = 4096
  execution_role_arn       = aws_iam_role.this["execution"].arn
  task_role_arn            = aws_iam_role.this["run"].arn
  container_definitions = jsonencode([merge(local.container_common, {
    name   = "run" # EcsRunLauncher overrides its command with `dagster api execute_run ...`
    cpu    = 1024  # the container has the whole task (stated, not left to the task's size)
    memory = 4096
    environment = [for k, v in merge(var.environment, { DAGSTER_HOME = local.dagster_home }) :
    { name = k, value = v }]
  })])
}

resource "aws_ecs_task_definition" "service" {
  #checkov:skip=CKV_AWS_336:Each process writes dagster.yaml and Dagster's own files under DAGSTER_HOME at start; the image runs as an unprivileged user.
  for_each                 = local.services
  family                   = "${local.name}-${each.key}"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = each.value.cpu
  memory                   = each.value.memory
  execution_role_arn       = aws_iam_role.this["execution"].arn
  task_role_arn            = each.value.role
  container_definitions = jsonencode([merge(local.container_common, {
    name         = each.key
    cpu          = each.value.cpu
    memory       = each.value.memory
    command      = each.value.command
    portMappings = each.value.port == null ? [] : [{ containerPort = each.value.port, protocol = "tcp" }]
    environment = [for k, v in merge(each.key == "code" ? var.environment : {}, local.instance_environment) :
    { name = k, value = v }]
  })])
}

resource "aws_ecs_service" "this" {
  for_each               = local.services
  name                   = each.key
  cluster                = aws_ecs_cluster.this.id
  task_definition        = aws_ecs_task_definition.service[each.key].arn
  desired_count          = 1 # the daemon must be one; the webserver and the code server may be more
  launch_type            = "FARGATE"
  enable_execute_command = false
  network_configuration {
    subnets          = var.subnet_ids
    security_groups  = [aws_security_group.tasks.id]
    assign_public_ip = false
  }
  dynamic "load_balancer" {
    for_each = each.key == "webserver" ? [1] : []
    content {
      target_group_arn = aws_lb_target_group.webserver.arn
      container_name   = "webserver"
      container_port   = local.web_port
    }
  }
  dynamic "service_registries" {
    for_each = each.key == "code" ? [1] : []
    content {
      registry_arn = aws_service_discovery_service.code.arn
    }
  }
  depends_on = [aws_lb_listener.https]
}

output "repository_url" {
  description = "Push the image of infra/platform.Dockerfile here."
  value       = aws_ecr_repository.platform.repository_url
}

output "cluster" {
  value = aws_ecs_cluster.this.name
}

output "run_task_definition" {
  value = aws_ecs_task_definition.run.arn_without_revision
}

output "task_security_group_id" {
  value = aws_security_group.tasks.id
}

output "webserver_url" {
  description = "The Dagster UI: the internal load balancer's HTTPS address."
  value       = "https://${aws_lb.webserver.dns_name}"
}

output "instance_environment" {
  description = "What `recsys-platform ecs-instance` reads (the containers carry it)."
  value       = local.instance_environment
}

