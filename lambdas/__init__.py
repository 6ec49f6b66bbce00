"""The platform's AWS Lambda handlers (deployed as Lambdas, called in-process locally)."""
