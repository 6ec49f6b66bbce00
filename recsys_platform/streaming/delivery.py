"""The local delivery runtime: what Kinesis Data Firehose does, on one machine.

Reads the stream from its checkpoint, buffers records (by count, size and interval), calls the
transformation handler with Firehose's event, checks the response contract, writes `Ok` records
as newline-delimited JSON under `YYYY/MM/DD/HH/` and failed ones under `processing-failed/`, and
only then commits the checkpoint.

Nothing is lost or duplicated across a crash: before a batch is transformed, its intent (the
sequence range, its id and time) is saved; a restarted runtime redoes exactly that batch into
the same object keys (overwriting any partial output), then commits. A handler exception
retries the whole batch with backoff, as Firehose does; after the last attempt every record of
the batch goes to processing-failed with the error.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from recsys_platform.storage.object_store import ObjectStore
from recsys_platform.streaming import firehose
from recsys_platform.streaming.firehose import DROPPED, OK, StreamRecord
from recsys_platform.streaming.stream import Stream


@dataclass
class Counters:
    records_in: int = 0
    delivered: int = 0
    dropped: int = 0
    failed: int = 0
    batches: int = 0
    retries: int = 0
    objects: int = 0
    reasons: Counter = field(default_factory=Counter)
    latencies_s: list[float] = field(default_factory=list)

    @property
    def balanced(self) -> bool:
        return self.records_in == self.delivered + self.dropped + self.failed

    def summary(self) -> dict:
        return {"records_in": self.records_in, "delivered": self.delivered, "dropped": self.dropped,
                "failed": self.failed, "batches": self.batches, "retries": self.retries,
                "objects": self.objects, "balanced": self.balanced,
                "failure_reasons": dict(self.reasons.most_common(10))}


@dataclass
class BufferHints:
    records: int = 500
    bytes: int = 1 << 20
    seconds: float = 1.0


class CheckpointFile:
    """The committed checkpoint and the in-flight batch intent, as small atomic JSON files."""

    def __init__(self, folder: str | Path, stream: str):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.checkpoint_path = self.folder / f"{stream}.checkpoint.json"
        self.intent_path = self.folder / f"{stream}.intent.json"

    @staticmethod
    def _write(path: Path, obj) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(obj))
        os.replace(tmp, path)

    def load(self) -> dict[str, str]:
        return json.loads(self.checkpoint_path.read_text()) if self.checkpoint_path.exists() else {}

    def commit(self, checkpoint: dict[str, str]) -> None:
        self._write(self.checkpoint_path, checkpoint)
        self.intent_path.unlink(missing_ok=True)

    def intent(self) -> dict | None:
        return json.loads(self.intent_path.read_text()) if self.intent_path.exists() else None

    def save_intent(self, intent: dict) -> None:
        self._write(self.intent_path, intent)


class DeliveryRuntime:
    def __init__(self, stream: Stream, transform: Callable[[dict], dict], store: ObjectStore,
                 state_dir: str | Path, hints: BufferHints | None = None, max_attempts: int = 3,
                 retry_seconds: float = 0.5, region: str = "local", lambda_arn: str = "local:stream_transformation",
                 log: Callable[[str], None] = print):
        self.stream, self.transform, self.store = stream, transform, store
        self.hints = hints or BufferHints()
        self.max_attempts, self.retry_seconds = max_attempts, retry_seconds
        self.region, self.lambda_arn, self.log = region, lambda_arn, log
        self.state = CheckpointFile(state_dir, stream.name)
        self.counters = Counters()
        self.delivery_arn = f"arn:aws:firehose:{region}:000000000000:deliverystream/{stream.name}-recommendations"

    # -- one batch ----------------------------------------------------------------------------
    def _invoke(self, records: list[StreamRecord]) -> tuple[dict, dict[str, dict] | None, str]:
        request = firehose.transformation_request(records, self.stream.arn, self.delivery_arn, self.region)
        error = ""
        for attempt in range(1, self.max_attempts + 1):
            try:
                response = self.transform(request)
                return request, firehose.check_response(request, response), ""
            except Exception as e:  # noqa: BLE001 - any handler failure retries the batch
                error = f"{type(e).__name__}: {e}"
                self.log(f"transformation failed (attempt {attempt}/{self.max_attempts}): {error}")
                if attempt < self.max_attempts:
                    self.counters.retries += 1
                    time.sleep(self.retry_seconds * 2 ** (attempt - 1))
        return request, None, error

    def deliver(self, records: list[StreamRecord], batch_id: str, when: dt.datetime) -> None:
        """Transform one batch and write its outputs (idempotent for the same id and time)."""
        request, answered, error = self._invoke(records)
        ok_lines, failed_lines, ok_arrivals = [], [], []
        for rec, req in zip(records, request["records"]):
            ans = answered.get(req["recordId"]) if answered else None
            if ans is None:
                failed_lines.append(firehose.error_record(rec.data, rec.arrival, "Lambda.InvokeFailed", error,
                                                          self.max_attempts, self.lambda_arn))
                self.counters.reasons["Lambda.InvokeFailed"] += 1
            elif ans["result"] == OK:
                ok_lines.append(base64.b64decode(ans["data"]).decode().rstrip("\n"))
                ok_arrivals.append(rec.arrival)
            elif ans["result"] == DROPPED:
                self.counters.dropped += 1
            else:
                reason = ans.get("errorMessage", "ProcessingFailed")
                failed_lines.append(firehose.error_record(rec.data, rec.arrival, "Lambda.ProcessingFailed", reason,
                                                          1, self.lambda_arn))
                # Grouped by kind: numbers and codes vary, the reason does not.
                self.counters.reasons[re.sub(r"\d+|\[.*\]", "#", reason.split(":")[0])[:80]] += 1
        if ok_lines:
            self.store.write_bytes(firehose.object_key(self.stream.name, when, batch_id),
                                   ("\n".join(ok_lines) + "\n").encode())
            self.counters.objects += 1
            written = dt.datetime.now(dt.timezone.utc)  # latency: produced -> object written
            self.counters.latencies_s.extend((written - a).total_seconds() for a in ok_arrivals)
        if failed_lines:
            self.store.write_bytes(firehose.object_key(self.stream.name, when, batch_id, failed=True),
                                   ("\n".join(json.dumps(f) for f in failed_lines) + "\n").encode())
            self.counters.objects += 1
        self.counters.records_in += len(records)
        self.counters.delivered += len(ok_lines)
        self.counters.failed += len(failed_lines)
        self.counters.batches += 1

    # -- the loop -----------------------------------------------------------------------------
    def _redo_pending(self, checkpoint: dict[str, str]) -> dict[str, str]:
        intent = self.state.intent()
        if intent is None:
            return checkpoint
        records = [r for r in self.stream.read(checkpoint, limit=intent["count"])][: intent["count"]]
        if [r.sequence_number for r in records[:1]] != [intent["first"]]:
            raise RuntimeError(f"cannot redo the interrupted batch {intent['id']}: the stream no longer "
                               f"starts at sequence {intent['first']} after the checkpoint")
        self.log(f"redoing interrupted batch {intent['id']} ({len(records)} records)")
        self.deliver(records, intent["id"], dt.datetime.fromisoformat(intent["time"]))
        checkpoint = self.stream.checkpoint_after(checkpoint, records)
        self.state.commit(checkpoint)
        return checkpoint

    def run(self, once: bool = False, max_seconds: float | None = None, poll_seconds: float = 0.2) -> Counters:
        """Deliver until the stream is drained (`once`) or forever (or for `max_seconds`)."""
        started = time.monotonic()
        checkpoint = self._redo_pending(self.state.load())
        buffer: list[StreamRecord] = []
        buffer_bytes, first_at = 0, None
        while True:
            room = self.hints.records - len(buffer)
            fresh = self.stream.read(self.stream.checkpoint_after(checkpoint, buffer), limit=room) if room else []
            if fresh and first_at is None:
                first_at = time.monotonic()
            buffer += fresh
            buffer_bytes += sum(len(r.data) for r in fresh)
            drained = not fresh
            due = buffer and (len(buffer) >= self.hints.records or buffer_bytes >= self.hints.bytes
                              or time.monotonic() - first_at >= self.hints.seconds or (once and drained))
            if due:
                when = dt.datetime.now(dt.timezone.utc)
                batch_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.stream.name}/{buffer[0].shard_id}/{buffer[0].sequence_number}"))
                self.state.save_intent({"id": batch_id, "time": when.isoformat(), "first": buffer[0].sequence_number,
                                        "count": len(buffer)})
                self.deliver(buffer, batch_id, when)
                checkpoint = self.stream.checkpoint_after(checkpoint, buffer)
                self.state.commit(checkpoint)
                self.log(f"batch {self.counters.batches}: {len(buffer)} records; totals {self.counters.summary()}")
                buffer, buffer_bytes, first_at = [], 0, None
                continue
            if once and drained and not buffer:
                return self.counters
            if max_seconds is not None and time.monotonic() - started >= max_seconds and not buffer:
                return self.counters
            if drained:
                time.sleep(poll_seconds)
