"""The two Lambda handlers' logic, as objects composed from what they call.

- `ModelInference(service)`: a Function URL request (the lab's routes: the FastAPI app of
  `serving.http` through Mangum) or a batch `{"action": "recommend", "requests": [...], "k": 5}`
  from the stream transformation (`serving.messages` is its JSON form).
- `StreamTransformation(infer, k)`: Firehose's processor. Decodes and validates each record; a
  bad record is `ProcessingFailed` with its reason (in `errorMessage`, which the local delivery
  runtime writes to processing-failed/; on AWS the reason is also logged with the recordId).
  Valid records become `RecommendationRequest`s and go to `infer` in ONE call per batch: the
  inference service in-process, or a `LambdaInvoker` (`lambda:Invoke`) on AWS; either answers a
  `RecommendationBatch`. A record whose values fail inference fails alone;
  an outage (the vector database down) raises, so Firehose retries the batch. The response
  never exceeds Lambda's 6 MB payload limit (`RESPONSE_LIMIT`): records that would push it over
  fail with that reason (infra/ sizes the processor buffer so that this does not happen).

The modules under `lambdas/` only build these from their settings (`wiring`).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import logging
from collections.abc import Callable

from recsys_platform.serving.messages import (
    RECOMMEND_ACTION,
    RecommendationBatch,
    RecommendationRequest,
    Refusal,
    new_recommendation_id,
    recommend_payload,
)
from recsys_platform.serving.service import InferenceService
from recsys_platform.streaming.events import EventError, decode_record
from recsys_platform.streaming.firehose import FAILED, OK, RESPONSE_LIMIT, encode
from recsys_platform.streaming.records import answer_record
from recsys_platform.vectors.rules import Rules

log = logging.getLogger(__name__)
# One call per batch: the requests and k in, one result per request out.
Infer = Callable[[list[RecommendationRequest], int], RecommendationBatch]


def is_function_url_event(event: dict) -> bool:
    """A Lambda Function URL request (payload format 2.0)."""
    return event.get("version") == "2.0" and isinstance(event.get("requestContext"), dict) \
        and "http" in event["requestContext"]


class ModelInference:
    """The model inference Lambda: its Function URL routes and the stream's batch action."""

    def __init__(self, service: InferenceService):
        self.service = service
        self._http = None  # the FastAPI app under Mangum, built at the first HTTP request

    def __call__(self, event: dict, context=None) -> dict:
        if is_function_url_event(event):
            if event.get("isBase64Encoded") and event.get("body"):
                try:  # Mangum would raise on it: answer 400 as the app answers bad bodies
                    base64.b64decode(event["body"], validate=True)
                except (binascii.Error, ValueError):
                    return {"statusCode": 400, "headers": {"content-type": "application/json"},
                            "body": json.dumps({"error": "body is not valid base64"}), "isBase64Encoded": False}
            if self._http is None:
                from mangum import Mangum

                from recsys_platform.serving.http import create_app

                self._http = Mangum(create_app(self.service), lifespan="off")
            return self._http(event, context)
        if event.get("action") == RECOMMEND_ACTION and isinstance(event.get("requests"), list):
            return self.recommend(event["requests"], event.get("k"))
        raise ValueError("unrecognised event: expected a Function URL request (payload 2.0) "
                         "or {'action': 'recommend', 'requests': [...]}")


    def recommend(self, requests: list, k: int | None) -> dict:
        """The batch action: each request read back from JSON (a malformed one is refused alone,
        in its place), the valid ones answered in one call."""
        parsed: list[RecommendationRequest | Refusal] = []
        for n, obj in enumerate(requests):
            try:
                parsed.append(RecommendationRequest.from_json(obj))
            except ValueError as e:
                key = obj.get("key") if isinstance(obj, dict) else None
                parsed.append(Refusal(key if key is not None else f"#{n}", str(e)))
        valid = [r for r in parsed if isinstance(r, RecommendationRequest)]
        answer = self.service.recommend(valid, k=k)
        answered = iter(answer.results)
        merged = [r if isinstance(r, Refusal) else next(answered) for r in parsed]
        return RecommendationBatch(answer.model_version, merged).to_json()


class LambdaInvoker:
    """Calls the model inference Lambda by name (`lambda:Invoke`, request/response)."""

    def __init__(self, function_name: str, endpoint_url: str = "", region: str = ""):
        import boto3

        self.function_name = function_name
        self.client = boto3.client("lambda", endpoint_url=endpoint_url or None, region_name=region or None)

    def __call__(self, requests: list[RecommendationRequest], k: int) -> RecommendationBatch:
        response = self.client.invoke(FunctionName=self.function_name, InvocationType="RequestResponse",
                                      Payload=json.dumps(recommend_payload(requests, k)).encode())
        body = json.loads(response["Payload"].read())
        if response.get("FunctionError"):
            raise RuntimeError(f"model inference failed: {body.get('errorMessage', body)}")
        return RecommendationBatch.from_json(body)


def _failed(record: dict, reason: str) -> dict:
    log.info("record %s failed: %s", record["recordId"], reason)
    return {"recordId": record["recordId"], "result": FAILED, "data": record["data"], "errorMessage": reason}


def _size(record: dict) -> int:
    """Bytes of one record in the response as Lambda's runtime serialises it (plus its ", ")."""
    return len(json.dumps(record)) + 2


def _size_bound(record: dict) -> int:
    """An upper bound of `_size` without serialising: escaping at most sextuples a character."""
    return 80 + len(record["recordId"]) + len(record["data"]) + 6 * len(record.get("errorMessage", ""))


BUDGET_REASON = ("the response would exceed Lambda's 6 MB payload limit; this record was not transformed "
                 "(lower the processor's buffer size: see infra/)")


def within_budget(records: list[dict], originals: list[dict], limit: int = RESPONSE_LIMIT) -> list[dict]:
    """The response's records, with Ok records failed (from the last) where all would not fit.

    A failed record costs about what its request record did, so a request within the limit
    always has an answer within it; each Ok record is kept while the total, counting every
    record not yet decided at its failed size, stays within `limit`.
    """
    if 32 + sum(_size_bound(r) for r in records) <= limit:
        return records  # the common case: clearly within the limit, nothing to serialise
    fallback = [r if r["result"] != OK else _failed(o, BUDGET_REASON) for r, o in zip(records, originals)]
    total = 32 + sum(_size(r) for r in fallback)
    out = []
    for r, f in zip(records, fallback):
        extra = _size(r) - _size(f)  # 0 unless r is an Ok record
        if total + extra <= limit:
            out.append(r)
            total += extra
        else:
            out.append(f)
    over = sum(1 for r, o in zip(records, out) if r is not o)
    if over:
        log.warning("%d of %d records failed: %s", over, len(records), BUDGET_REASON)
    return out


class StreamTransformation:
    """Firehose's transformation: activity events in, recommendation records out. `rules`: the
    deployment's default serving rules (RECSYS_RULES), which an event's `rules` field changes."""

    def __init__(self, infer: Infer, k: int = 5, rules: Rules = Rules()):
        self.infer, self.k, self.rules = infer, k, rules

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
            requests.append(RecommendationRequest.from_event(record["recordId"], ev, self.rules))
        if requests:
            answer = self.infer(requests, self.k)
            processed_at = dt.datetime.now(dt.timezone.utc).isoformat()
            by_key = {r.key: r for r in answer.results}
            for record in event["records"]:
                rid = record["recordId"]
                if rid not in decoded:
                    continue
                result = by_key.get(rid)
                if result is None:
                    out[rid] = _failed(record, "model inference returned no result for this record")
                elif isinstance(result, Refusal):
                    out[rid] = _failed(record, result.reason)
                else:
                    stamp = record.get("approximateArrivalTimestamp")  # Firehose's, in ms
                    arrived = None if stamp is None else dt.datetime.fromtimestamp(stamp / 1000, dt.timezone.utc)
                    out[rid] = {"recordId": rid, "result": OK, "data": encode(answer_record(decoded[rid], {
                        **result.record_fields(), "model_version": answer.model_version,
                        "recommendation_id": new_recommendation_id(), "processed_at": processed_at}, arrived))}
        return {"records": within_budget([out[r["recordId"]] for r in event["records"]], event["records"])}


def decode_output(record: dict) -> dict:
    """The recommendation JSON of an Ok record (for tests and tools)."""
    return json.loads(base64.b64decode(record["data"]))
