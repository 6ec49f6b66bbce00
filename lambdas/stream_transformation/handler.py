"""Firehose stream transformation Lambda: activity events in, recommendation records out.

Decodes and validates each record; a bad record is `ProcessingFailed` with its reason (in
`errorMessage`, which the local delivery runtime writes to processing-failed/; on AWS the reason
is also logged with the recordId). Valid records go to the model inference handler in ONE call
per batch: in-process when MODEL_INFERENCE_FUNCTION is empty, else `lambda:Invoke` on that
function. An inference failure (the vector database down) raises, so Firehose retries the batch.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import os

from recsys_platform.core.events import EventError, decode_record
from recsys_platform.core.firehose import FAILED, OK, encode

log = logging.getLogger(__name__)


def invoke_inference(payload: dict) -> dict:
    function = os.environ.get("MODEL_INFERENCE_FUNCTION", "")
    if not function:
        from lambdas.model_inference.handler import lambda_handler

        return lambda_handler(payload, None)
    import boto3

    client = boto3.client("lambda", endpoint_url=os.environ.get("AWS_ENDPOINT_URL") or None)
    response = client.invoke(FunctionName=function, InvocationType="RequestResponse", Payload=json.dumps(payload).encode())
    body = json.loads(response["Payload"].read())
    if response.get("FunctionError"):
        raise RuntimeError(f"model inference failed: {body.get('errorMessage', body)}")
    return body


def _failed(record: dict, reason: str) -> dict:
    log.info("record %s failed: %s", record["recordId"], reason)
    return {"recordId": record["recordId"], "result": FAILED, "data": record["data"], "errorMessage": reason}


def lambda_handler(event: dict, context=None) -> dict:
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
        answer = invoke_inference({"action": "recommend", "requests": requests,
                                   "k": int(os.environ.get("RECSYS_TOP_K", "5"))})
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
