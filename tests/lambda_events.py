"""Lambda events as AWS sends them, for the handler tests (shapes from AWS's documented samples)."""

from __future__ import annotations

import base64
import json
from urllib.parse import urlencode


def function_url_event(method: str, path: str, body=None, raw_body: bytes | str | None = None,
                       base64_body: bool = False, headers: dict | None = None, **params) -> dict:
    """A Lambda Function URL request (payload format 2.0), as AWS delivers it to the function."""
    if raw_body is None and body is not None:
        raw_body = json.dumps(body)
    if isinstance(raw_body, bytes):
        base64_body = True
        raw_body = base64.b64encode(raw_body).decode()
    elif base64_body and raw_body is not None:
        raw_body = base64.b64encode(raw_body.encode()).decode()
    # A repeated parameter (a list) appears once per value in the raw string and, as AWS joins
    # repeated values, comma-separated in queryStringParameters.
    query = {k: [str(x) for x in v] if isinstance(v, list) else str(v) for k, v in params.items()}
    joined = {k: ",".join(v) if isinstance(v, list) else v for k, v in query.items()}
    return {
        "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": urlencode(query, doseq=True),
        "headers": {"content-type": "application/json", "host": "abcdefghij.lambda-url.us-east-1.on.aws",
                    "x-forwarded-proto": "https", "x-forwarded-port": "443", "user-agent": "lab-client",
                    **(headers or {})},
        "queryStringParameters": joined or None,
        "requestContext": {
            "accountId": "123456789012", "apiId": "abcdefghij", "domainName": "abcdefghij.lambda-url.us-east-1.on.aws",
            "domainPrefix": "abcdefghij", "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef", "routeKey": "$default",
            "stage": "$default", "time": "29/Nov/2026:09:00:00 +0000", "timeEpoch": 1795942800000,
            "http": {"method": method, "path": path, "protocol": "HTTP/1.1", "sourceIp": "198.51.100.7",
                     "userAgent": "lab-client"}},
        "body": raw_body, "isBase64Encoded": base64_body,
    }
