"""Serving: typed requests and results, the inference service, the HTTP app and the Lambda handlers."""
