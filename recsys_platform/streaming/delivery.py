"""The local delivery runtime: what Kinesis Data Firehose does, on one machine.

Reads the stream from its checkpoint, buffers records (by count, size and interval), calls the
transformation handler with Firehose's event, checks the response contract, writes `Ok` records
as newline-delimited JSON under `YYYY/MM/DD/HH/` and failed ones under `processing-failed/`, and
only then commits the checkpoint.

Nothing is lost or duplicated across a crash: before a batch is transformed, its intent (the
sequence range, its id and time) is saved; a restarted runtime redoes exactly that batch into
the same object keys (overwriting any partial output), then commits. A handler exception
retries the whole batch with exponential back-off for `retry_duration_s` (60 s, Firehose's
default), so an outage of that length loses and fails nothing; only then does every record of
the batch go to processing-failed with the error.

AWS's limits hold here too: a request and a response are at most 6 MB (`firehose.REQUEST_LIMIT`);
a batch is cut before its request would pass the limit, and a larger response is a failed
invocation. One runtime per stream at a time: `run` holds an exclusive lock on the stream's state
(`flock`, released by the operating system when the holder dies, so a crash never keeps it).
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

from recsys_platform.storage.locks import Busy, ProcessLock
from recsys_platform.storage.object_store import ObjectStore, is_hidden
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
    bytes: int = firehose.PROCESSOR_BUFFER_BYTES
    seconds: float = 1.0


# A record's bytes in the transformation request beyond its base64 data: recordId, timestamps and
# kinesisRecordMetadata (measured at about 330 bytes with Kinesis' 56-digit sequence numbers).
RECORD_OVERHEAD = 400


def request_cost(data: bytes) -> int:
    """An upper bound of what one record adds to the transformation request, in bytes."""
    return 4 * ((len(data) + 2) // 3) + RECORD_OVERHEAD


REDRIVE_PLAN = ".redrive-"  # beside a processing-failed object being redriven: its batch id and time
INVOKE_FAILED = "Lambda.InvokeFailed"  # Firehose's code for a batch the transformation could not take
UNREADABLE = "unreadable processing-failed object"  # a reason `redrive` counts: the object is left as it is


DeliveryBusy = Busy  # another deliver (or redrive) holds the stream


def StreamLock(folder: str | Path, stream: str, command: str = "deliver") -> ProcessLock:  # noqa: N802 - a lock
    """The lock on a stream's delivery state (`<state>/<stream>.lock`; redrive has its own), held
    while a runtime runs."""
    name = f"{stream}.lock" if command == "deliver" else f"{stream}.{command}.lock"
    return ProcessLock(Path(folder) / name, command, f" on stream {stream!r}",
                       f"one {command} per stream at a time (the lock goes with its process)")


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
        # Two steps, so a kill can land between them: the intent names the checkpoint it was
        # made after, and an intent whose checkpoint has moved on was committed (`_redo_pending`).
        self._write(self.checkpoint_path, checkpoint)
        self.discard_intent()

    def discard_intent(self) -> None:
        self.intent_path.unlink(missing_ok=True)

    def intent(self) -> dict | None:
        return json.loads(self.intent_path.read_text()) if self.intent_path.exists() else None

    def save_intent(self, intent: dict) -> None:
        self._write(self.intent_path, intent)


class DeliveryRuntime:
    def __init__(self, stream: Stream, transform: Callable[[dict], dict], store: ObjectStore,
                 state_dir: str | Path, hints: BufferHints | None = None, retry_duration_s: float = 60.0,
                 first_backoff_s: float = 0.5, max_backoff_s: float = 8.0, region: str = "local",
                 lambda_arn: str = "local:stream_transformation", log: Callable[[str], None] = print):
        self.stream, self.transform, self.store = stream, transform, store
        self.hints = hints or BufferHints()
        self.retry_duration_s, self.first_backoff_s, self.max_backoff_s = retry_duration_s, first_backoff_s, max_backoff_s
        self.region, self.lambda_arn, self.log = region, lambda_arn, log
        self.state = CheckpointFile(state_dir, stream.name)
        self.lock = StreamLock(state_dir, stream.name)
        self.counters = Counters()
        self.delivery_arn = f"arn:aws:firehose:{region}:000000000000:deliverystream/{stream.name}-recommendations"

    # -- one batch ----------------------------------------------------------------------------
    def _invoke(self, records: list[StreamRecord]) -> tuple[dict, dict[str, dict] | None, str, int]:
        """Call the transformation, retrying with back-off until `retry_duration_s` has passed."""
        request = firehose.transformation_request(records, self.stream.arn, self.delivery_arn, self.region)
        size = firehose.payload_size(request)
        if size > firehose.REQUEST_LIMIT:  # the buffer cuts batches before this: a bug, not data
            raise firehose.ContractError(f"request of {size:,} bytes exceeds Lambda's {firehose.REQUEST_LIMIT:,}")
        deadline = time.monotonic() + self.retry_duration_s
        attempt, wait = 0, self.first_backoff_s
        while True:
            attempt += 1
            try:
                response = self.transform(request)
                return request, firehose.check_response(request, response), "", attempt
            except Exception as e:  # noqa: BLE001 - any handler failure retries the batch
                error = f"{type(e).__name__}: {e}"
                left = deadline - time.monotonic()
                self.log(f"transformation failed (attempt {attempt}, {max(left, 0):.0f} s of retries left): {error}")
                if left <= 0:
                    return request, None, error, attempt
                self.counters.retries += 1
                time.sleep(min(wait, left))
                wait = min(wait * 2, self.max_backoff_s)

    def deliver(self, records: list[StreamRecord], batch_id: str, when: dt.datetime) -> None:
        """Transform one batch and write its outputs (idempotent for the same id and time)."""
        request, answered, error, attempts = self._invoke(records)
        ok_lines, failed_lines, ok_arrivals = [], [], []
        for rec, req in zip(records, request["records"]):
            ans = answered.get(req["recordId"]) if answered else None
            if ans is None:
                failed_lines.append(firehose.error_record(rec.data, rec.arrival, INVOKE_FAILED, error,
                                                          attempts, self.lambda_arn))
                self.counters.reasons[INVOKE_FAILED] += 1
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

    # -- processing-failed/ again ------------------------------------------------------------
    def redrive(self) -> Counters:
        """Send every record under processing-failed/ through the transformation again, exactly once.

        Each failed object is one batch (it was one before). Before it is sent, a plan (a batch id
        and time) is saved beside it as `.redrive-<name>`; the outputs go to the keys that plan
        names (objects of the plan's hour, a new processing-failed/ object for records that fail
        again), then the failed object and its plan are removed. A rerun after a kill redoes a
        planned object into the same keys, so no record is written twice; an object whose lines
        are not Firehose's error records is left where it is, and counted.
        """
        with StreamLock(self.state.folder, self.stream.name, "redrive"):
            now = dt.datetime.now(dt.timezone.utc)
            listed = self.store.list(firehose.FAILED_PREFIX)
            plans = {o.key: json.loads(self.store.read_bytes(o.key)) for o in listed
                     if o.key.rsplit("/", 1)[1].startswith(REDRIVE_PLAN)}
            # What an interrupted redrive wrote for records that failed again is rewritten when its
            # object is redone below: it is not a failed object of its own (yet).
            rewritten = {firehose.object_key(self.stream.name, dt.datetime.fromisoformat(p["time"]), p["id"],
                                             failed=True) for p in plans.values()}
            for obj in listed:
                folder, name = obj.key.rsplit("/", 1)
                if obj.key in plans:
                    if not self.store.exists(f"{folder}/{name.removeprefix(REDRIVE_PLAN)}"):
                        self.store.delete(obj.key)  # its object was redriven; the kill came before this
                    continue
                if is_hidden(name) or obj.key in rewritten:  # a writer's temporary; see above
                    continue
                records = self._failed_records(obj.key)
                if records is None:
                    continue
                plan_key = f"{folder}/{REDRIVE_PLAN}{name}"
                plan = plans.get(plan_key)
                if plan is None:
                    plan = {"id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"redrive/{obj.key}")), "time": now.isoformat()}
                    self.store.write_bytes(plan_key, json.dumps(plan).encode())
                self.log(f"redriving {obj.key} ({len(records)} records)")
                self.deliver(records, plan["id"], dt.datetime.fromisoformat(plan["time"]))
                self.store.delete(obj.key)
                self.store.delete(plan_key)
        return self.counters

    def _failed_records(self, key: str) -> list[StreamRecord] | None:
        """The records of a processing-failed object, from their raw data; None (counted) when it is
        not made of Firehose's error records."""
        try:
            errors = [json.loads(line) for line in self.store.read_bytes(key).decode().splitlines() if line.strip()]
            return [StreamRecord(f"redrive-{n}", "redrive", base64.b64decode(e["rawData"], validate=True),
                                 dt.datetime.fromtimestamp(e["arrivalTimestamp"] / 1000, dt.timezone.utc))
                    for n, e in enumerate(errors)]
        except (ValueError, KeyError, TypeError) as e:  # UnicodeDecodeError and binascii.Error are ValueErrors
            self.log(f"left {key} as it is: not Firehose's error records ({type(e).__name__}: {e})")
            self.counters.reasons[UNREADABLE] += 1
            return None

    # -- the loop -----------------------------------------------------------------------------
    def _redo_pending(self, checkpoint: dict[str, str]) -> dict[str, str]:
        intent = self.state.intent()
        if intent is None:
            return checkpoint
        if "after" in intent and intent["after"] != checkpoint:
            # Killed between committing this batch's checkpoint and removing its intent: the
            # batch is delivered and committed; redoing it would write it twice.
            self.log(f"batch {intent['id']} was committed before the interruption: nothing to redo")
            self.state.discard_intent()
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
        """Deliver until the stream is drained (`once`) or forever (or for `max_seconds`).

        Raises `DeliveryBusy` when another runtime holds the stream."""
        with self.lock:
            return self._run(once, max_seconds, poll_seconds)

    def _run(self, once: bool, max_seconds: float | None, poll_seconds: float) -> Counters:
        started = time.monotonic()
        checkpoint = self._redo_pending(self.state.load())
        buffer: list[StreamRecord] = []
        pending: list[StreamRecord] = []  # read from the stream, not yet in a batch
        buffer_bytes, request_bytes, first_at, full = 0, 512, None, False
        while True:
            drained = False
            if not pending:
                room = self.hints.records - len(buffer)
                if room > 0:
                    pending = self.stream.read(self.stream.checkpoint_after(checkpoint, buffer), limit=room)
                    drained = not pending
            if pending and first_at is None:
                first_at = time.monotonic()
            taken = 0
            for r in pending:  # a batch ends before the buffer hints or Lambda's request limit would pass
                if buffer and (len(buffer) >= self.hints.records or buffer_bytes + len(r.data) > self.hints.bytes
                               or request_bytes + request_cost(r.data) > firehose.REQUEST_LIMIT):
                    full = True
                    break
                buffer.append(r)
                buffer_bytes += len(r.data)
                request_bytes += request_cost(r.data)
                taken += 1
            pending = pending[taken:]
            full = full or len(buffer) >= self.hints.records or buffer_bytes >= self.hints.bytes
            due = buffer and (full or time.monotonic() - first_at >= self.hints.seconds or (once and drained))
            if due:
                when = dt.datetime.now(dt.timezone.utc)
                batch_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"{self.stream.name}/{buffer[0].shard_id}/{buffer[0].sequence_number}"))
                self.state.save_intent({"id": batch_id, "time": when.isoformat(), "first": buffer[0].sequence_number,
                                        "count": len(buffer), "after": checkpoint})
                self.deliver(buffer, batch_id, when)
                checkpoint = self.stream.checkpoint_after(checkpoint, buffer)
                self.state.commit(checkpoint)
                self.log(f"batch {self.counters.batches}: {len(buffer)} records; totals {self.counters.summary()}")
                buffer, buffer_bytes, request_bytes, first_at, full = [], 0, 512, None, False
                continue
            if once and drained and not buffer:
                return self.counters
            if max_seconds is not None and time.monotonic() - started >= max_seconds and not buffer and not pending:
                return self.counters
            if drained:
                time.sleep(poll_seconds)
