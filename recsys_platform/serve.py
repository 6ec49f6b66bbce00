"""`recsys-platform serve`: the model inference Function URL routes over local HTTP.

Each HTTP request becomes the Lambda's payload-2.0 event, so the local API and the deployed
Function URL run the same handler code.
"""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

from lambdas.model_inference import handler as inference


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _call(self, method: str) -> None:
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else None
        event = {"version": "2.0", "rawPath": url.path, "rawQueryString": url.query,
                 "queryStringParameters": dict(parse_qsl(url.query)) or None, "body": body, "isBase64Encoded": False,
                 "requestContext": {"http": {"method": method, "path": url.path}}}
        try:
            response = inference.lambda_handler(event, None)
        except Exception as e:  # noqa: BLE001 - an HTTP client gets a 500 with the reason, not a dropped socket
            response = {"statusCode": 500, "body": json.dumps({"error": f"{type(e).__name__}: {e}"})}
        payload = response.get("body", "").encode()
        self.send_response(response.get("statusCode", 200))
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._call("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._call("POST")

    def log_message(self, format: str, *args) -> None:  # quiet by default
        pass


def make_server(port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    return ThreadingHTTPServer((host, port), _Handler)
