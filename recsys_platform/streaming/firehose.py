"""Kinesis Data Firehose's contracts: the transformation request/response and the S3 layout.

Used by the local delivery runtime (which plays Firehose) and by the tests of the Lambda.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

OK, DROPPED, FAILED = "Ok", "Dropped", "ProcessingFailed"
# Lambda's synchronous invocation payload limit, for the request and for the response (6 MB).
REQUEST_LIMIT = RESPONSE_LIMIT = 6 * 1024 * 1024
# The processor's buffer (Firehose's BufferSizeInMBs for the Lambda, "0.6" in infra/): the worst
# case, the smallest valid event (125 bytes) answered with k=5 recommended and 5 similar items
# and its recommendation id, takes 1,044 bytes of response (8.4x), so 0.6 MiB of them answer in
# 5.3 MB, within RESPONSE_LIMIT (1 MiB would need 8.8 MB). tests/test_streaming_edge.py measures
# it; docs/streaming.md explains.
PROCESSOR_BUFFER_MB = 0.6
PROCESSOR_BUFFER_BYTES = int(PROCESSOR_BUFFER_MB * 1024 * 1024)
RESULTS = (OK, DROPPED, FAILED)
FAILED_PREFIX = "processing-failed"


@dataclass(frozen=True)
class StreamRecord:
    """A record as read from the stream."""

    sequence_number: str
    partition_key: str
    data: bytes
    arrival: dt.datetime  # UTC
    shard_id: str = "shardId-000000000000"


def encode(obj) -> str:
    """JSON + newline, base64: what a transformation returns as `data` for an Ok record."""
    return base64.b64encode((json.dumps(obj, separators=(",", ":")) + "\n").encode()).decode()


def transformation_request(records: Sequence[StreamRecord], stream_arn: str, delivery_stream_arn: str,
                           region: str) -> dict:
    """The event Firehose sends a processor Lambda for records from a Kinesis stream."""
    return {
        "invocationId": str(uuid.uuid4()),
        "deliveryStreamArn": delivery_stream_arn,
        "sourceKinesisStreamArn": stream_arn,
        "region": region,
        "records": [
            {
                "recordId": f"{r.sequence_number}-{n}",
                "approximateArrivalTimestamp": int(r.arrival.timestamp() * 1000),
                "data": base64.b64encode(r.data).decode(),
                "kinesisRecordMetadata": {
                    "sequenceNumber": r.sequence_number, "subsequenceNumber": 0, "partitionKey": r.partition_key,
                    "shardId": r.shard_id, "approximateArrivalTimestamp": int(r.arrival.timestamp() * 1000),
                },
            }
            for n, r in enumerate(records)
        ],
    }


class ContractError(RuntimeError):
    """The transformation's response breaks Firehose's contract (Firehose fails the whole batch)."""


def payload_size(payload: dict) -> int:
    """Bytes of a Lambda payload as serialised JSON."""
    return len(json.dumps(payload))


def check_response(request: dict, response: dict) -> dict[str, dict]:
    """Within Lambda's size limit; every input recordId answered exactly once with a valid result
    and base64 data."""
    if not isinstance(response, dict) or not isinstance(response.get("records"), list):
        raise ContractError("response has no 'records' list")
    size = payload_size(response)
    if size > RESPONSE_LIMIT:
        raise ContractError(f"response is {size:,} bytes, more than Lambda's {RESPONSE_LIMIT:,}-byte payload limit")
    expected = {r["recordId"] for r in request["records"]}
    answered: dict[str, dict] = {}
    for rec in response["records"]:
        rid = rec.get("recordId")
        if rid not in expected:
            raise ContractError(f"response names unknown recordId {rid!r}")
        if rid in answered:
            raise ContractError(f"recordId {rid!r} answered twice")
        if rec.get("result") not in RESULTS:
            raise ContractError(f"recordId {rid!r} has result {rec.get('result')!r}, expected one of {RESULTS}")
        if rec["result"] == OK:
            try:
                base64.b64decode(rec.get("data", ""), validate=True)
            except (ValueError, TypeError):
                raise ContractError(f"recordId {rid!r}: data is not base64") from None
        answered[rid] = rec
    missing = expected - answered.keys()
    if missing:
        raise ContractError(f"{len(missing)} recordId(s) not answered, e.g. {sorted(missing)[0]!r}")
    return answered


def hour_prefix(when: dt.datetime) -> str:
    return when.astimezone(dt.timezone.utc).strftime("%Y/%m/%d/%H")


def object_key(stream: str, when: dt.datetime, batch_id: str, failed: bool = False) -> str:
    """`YYYY/MM/DD/HH/<stream>-1-YYYY-MM-DD-HH-MM-SS-<uuid>` (under processing-failed/ for errors)."""
    when = when.astimezone(dt.timezone.utc)
    name = f"{stream}-1-{when.strftime('%Y-%m-%d-%H-%M-%S')}-{batch_id}"
    key = f"{hour_prefix(when)}/{name}"
    return f"{FAILED_PREFIX}/{key}" if failed else key


def error_record(raw: bytes, arrival: dt.datetime, code: str, message: str, attempts: int, lambda_arn: str) -> dict:
    """Firehose's processing-failed record format."""
    return {
        "attemptsMade": attempts, "arrivalTimestamp": int(arrival.timestamp() * 1000),
        "errorCode": code, "errorMessage": message,
        "attemptEndingTimestamp": int(dt.datetime.now(dt.timezone.utc).timestamp() * 1000),
        "rawData": base64.b64encode(raw).decode(), "lambdaArn": lambda_arn,
    }
