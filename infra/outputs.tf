output "lake_url" {
  description = "RECSYS_LAKE_URL for Dagster."
  value       = "s3://${module.buckets["lake"].bucket}"
}

output "artifacts_url" {
  description = "RECSYS_ARTIFACTS_URL."
  value       = "s3://${module.buckets["ml-artifacts"].bucket}"
}

output "recommendations_url" {
  description = "RECSYS_RECOMMENDATIONS_URL."
  value       = "s3://${module.buckets["recommendations"].bucket}"
}

output "stream" {
  description = "RECSYS_STREAM."
  value       = "kinesis://${module.streaming.stream_name}"
}

output "glue_job_name" {
  value = module.etl.job_name
}

output "vector_db_endpoint" {
  value = module.vector_db.endpoint
}

output "vector_db_secret_arn" {
  description = "The RDS-managed master secret (RECSYS_VECTOR_DSN is assembled from it at run time)."
  value       = module.vector_db.master_secret_arn
}

output "lambda_repository_url" {
  description = "Push the image of infra/lambda.Dockerfile here."
  value       = module.streaming.lambda_repository_url
}

output "inference_function_url" {
  description = "The model inference routes (AWS_IAM auth: sign requests with SigV4, service lambda)."
  value       = module.streaming.inference_function_url
}

output "platform_repository_url" {
  description = "Push the image of infra/platform.Dockerfile here (Dagster's webserver, daemon, code server and runs)."
  value       = module.orchestration.repository_url
}

output "dagster_url" {
  description = "The Dagster UI, on the internal load balancer (reach it from the allowed ranges)."
  value       = module.orchestration.webserver_url
}

output "ecs_cluster" {
  description = "RECSYS_ECS_CLUSTER: where every run is an ECS task."
  value       = module.orchestration.cluster
}

output "ecs_run_task_definition" {
  description = "RECSYS_ECS_RUN_TASK_DEFINITION."
  value       = module.orchestration.run_task_definition
}

output "dagster_instance_environment" {
  description = "The variables `recsys-platform ecs-instance` renders dagster.yaml from (set on every Dagster container)."
  value       = module.orchestration.instance_environment
}
