# Test only (tests/test_infra_apply.py copies this beside a copy of infra/): the AWS API that
# Terraform talks to, a moto server on loopback. Never part of infra/ itself.
variable "test_aws_endpoint" {
  description = "The moto server's URL."
  type        = string
}
