"""The two Lambda handlers' logic, as objects composed from what they call.

- `ModelInference(service)`: a Function URL request (the lab's routes, `streaming.http`) or a
  batch `{"action": "recommend", "requests": [...], "k": 5}` from the stream transformation.
- `StreamTransformation(infer, k)`: Firehose's processor. Decodes and validates each record; a
  bad record is `ProcessingFailed` with its reason (in `errorMessage`, which the local delivery
  runtime writes to processing-failed/; on AWS the reason is also logged with the recordId).
  Valid records go to `infer` in ONE call per batch: a `ModelInference` in-process, or a
  `LambdaInvoker` (`lambda:Invoke`) on AWS. An inference failure (the vector database down)
  raises, so Firehose retries the batch.

The modules under `lambdas/` only build these from their environment (`streaming.lambda_env`).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
from collections.abc import Callable

from recsys_platform.streaming import http
from recsys_platform.streaming.events import EventError, decode_record
from recsys_platform.streaming.firehose import FAILED, OK, encode
from recsys_platform.streaming.inference import InferenceService

log = logging.getLogger(__name__)
Infer = Callable[[dict], dict]


class ModelInference:
    """The model inference Lambda: its Function URL routes and the stream's batch action."""

    def __init__(self, service: InferenceService):
        self.service = service

    def __call__(self, event: dict, context=None) -> dict:
        if http.is_function_url_event(event):
            return http.function_url(self.service, event)
        if event.get("action") == "recommend":
            return self.service.recommend(event["requests"], k=event.get("k"))
        raise ValueError("unrecognised event: expected a Function URL request or {'action': 'recommend'}")


class LambdaInvoker:
    """Calls the model inference Lambda by name (`lambda:Invoke`, request/response)."""

    def __init__(self, function_name: str, endpoint_url: str = ""):
        import boto3

        self.function_name = function_name
        self.client = boto3.client("lambda", endpoint_url=endpoint_url or None)

    def __call__(self, payload: dict) -> dict:
        response = self.client.invoke(FunctionName=self.function_name, InvocationType="RequestResponse",
                                      Payload=json.dumps(payload).encode())
        body = json.loads(response["Payload"].read())
        if response.get("FunctionError"):
            raise RuntimeError(f"model inference failed: {body.get('errorMessage', body)}")
        return body


def _failed(record: dict, reason: str) -> dict:
    log.info("record %s failed: %s", record["recordId"], reason)
    return {"recordId": record["recordId"], "result": FAILED, "data": record["data"], "errorMessage": reason}


class StreamTransformation:
    """Firehose's transformation: activity events in, recommendation records out."""

    def __init__(self, infer: Infer, k: int = 5):
        self.infer, self.k = infer, k

    def __call__(self, event: dict, context=None) -> dict:
        out: dict[str, dict] = {}
        decoded: dict[str, dict] = {}
        requests = []
        for record in event["records"]:
            try:
                obj, ev = decode_record(record["data"])
            except EventError as e:
                out[record["recordId"]] = _failed(record, str(e))
                continue
            decoded[record["recordId"]] = obj
            requests.append({"key": record["recordId"], "customer_number": ev.customer_number, "city": ev.city,
                             "country": ev.country, "credit_limit": ev.credit_limit, "cart": ev.cart,
                             "seen": sorted(ev.seen), "anchor": ev.anchor_product})
        if requests:
            answer = self.infer({"action": "recommend", "requests": requests, "k": self.k})
            processed_at = dt.datetime.now(dt.timezone.utc).isoformat()
            by_key = {r["key"]: r for r in answer["results"]}
            for record in event["records"]:
                rid = record["recordId"]
                if rid not in decoded:
                    continue
                result = by_key.get(rid)
                if result is None:
                    out[rid] = _failed(record, "model inference returned no result for this record")
                elif "error" in result:
                    out[rid] = _failed(record, result["error"])
                else:
                    out[rid] = {"recordId": rid, "result": OK, "data": encode({
                        **decoded[rid], "recommended_items": result["recommended_items"],
                        "similar_items": result["similar_items"], "model_version": answer["model_version"],
                        "processed_at": processed_at})}
        return {"records": [out[r["recordId"]] for r in event["records"]]}


def decode_output(record: dict) -> dict:
    """The recommendation JSON of an Ok record (for tests and tools)."""
    return json.loads(base64.b64decode(record["data"]))
