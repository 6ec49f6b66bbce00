# Test only, copied to modules/buckets/: the one exclusion moto needs (docs/deploy.md).
# moto (5.2) evaluates bucket policies without the request's context keys, and its Bool condition
# holds when the key is absent, so infra/'s TLS-only policy (Deny s3:* when aws:SecureTransport is
# false) denies every object request, over HTTPS too (tried behind a TLS proxy: 403 on PutObject).
# The stand-in keeps a bucket policy resource and denies nothing.
resource "aws_s3_bucket_policy" "this" {
  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "MotoStandIn"
      Effect    = "Allow"
      Principal = { AWS = "arn:aws:iam::123456789012:root" }
      Action    = "s3:GetObject"
      Resource  = "${aws_s3_bucket.this.arn}/*"
    }]
  })
}
