# Test only: the same provider, pointed at moto with dummy credentials. Terraform merges this
# over infra/versions.tf (an override file), so infra/ itself is applied unchanged.
provider "aws" {
  access_key                  = "testing"
  secret_key                  = "testing"
  skip_credentials_validation = true
  skip_metadata_api_check     = true
  s3_use_path_style           = true
  endpoints {
    acm              = var.test_aws_endpoint
    ec2              = var.test_aws_endpoint
    ecr              = var.test_aws_endpoint
    ecs              = var.test_aws_endpoint
    elbv2            = var.test_aws_endpoint
    firehose         = var.test_aws_endpoint
    glue             = var.test_aws_endpoint
    iam              = var.test_aws_endpoint
    kinesis          = var.test_aws_endpoint
    kms              = var.test_aws_endpoint
    lambda           = var.test_aws_endpoint
    logs             = var.test_aws_endpoint
    rds              = var.test_aws_endpoint
    s3               = var.test_aws_endpoint
    secretsmanager   = var.test_aws_endpoint
    servicediscovery = var.test_aws_endpoint
    sqs              = var.test_aws_endpoint
    sts              = var.test_aws_endpoint
  }
}
