"""The activity stream: one interface, a local append-only log or a Kinesis data stream.

Readers keep a checkpoint per shard (the last sequence number delivered), so a restarted
delivery runtime continues exactly where its last committed batch ended.
"""

from __future__ import annotations

import base64
import datetime as dt
import fcntl
import json
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

from recsys_platform.errors import RecsysError, disk_full, disk_full_in
from recsys_platform.streaming.firehose import StreamRecord

LOCAL_SHARD = "shardId-000000000000"
MAX_RECORD_BYTES = 1 << 20   # Kinesis: a record's data and partition key together, at most 1 MiB
MAX_KEY_CHARS = 256          # Kinesis: a partition key is 1 to 256 characters
_TAIL_BLOCK = 1 << 16        # the local log is read back from its end in blocks of this size


class StreamError(RecsysError):
    """A stream refuses records, or its log cannot be read in order; the message says which and why."""


def record_size(key: str, data: bytes) -> int:
    """What Kinesis counts against MAX_RECORD_BYTES: the data and the partition key together."""
    return len(key.encode()) + len(data)


def check_records(records: Sequence[tuple[str, bytes]]) -> None:
    """Refuse, before anything is written, a batch holding a record Kinesis would refuse: each
    one named with its size and the limit (the local log keeps the same limits, so what works
    locally works on AWS)."""
    bad = []
    for i, (key, data) in enumerate(records):
        size = record_size(key, data)
        if not 1 <= len(key) <= MAX_KEY_CHARS:
            bad.append(f"record {i}: a partition key of {len(key)} characters (1 to {MAX_KEY_CHARS})")
        elif size > MAX_RECORD_BYTES:
            bad.append(f"record {i} (key {key[:40]!r}): {size:,} bytes, over the {MAX_RECORD_BYTES:,}-byte limit")
    if bad:
        raise StreamError(f"{len(bad)} of {len(records)} record(s) refused, none of the batch written: "
                          + "; ".join(bad[:5]) + ("; ..." if len(bad) > 5 else ""))


class Stream(ABC):
    name: str

    @abstractmethod
    def put_records(self, records: Sequence[tuple[str, bytes]]) -> int:
        """Append (partition key, data) records; returns how many were written."""

    @abstractmethod
    def read(self, checkpoint: dict[str, str], limit: int = 1000) -> list[StreamRecord]:
        """Records after the checkpoint (per shard), oldest first, at most `limit`."""

    @property
    def arn(self) -> str:
        return f"arn:aws:kinesis:local:000000000000:stream/{self.name}"

    def checkpoint_after(self, checkpoint: dict[str, str], records: Sequence[StreamRecord]) -> dict[str, str]:
        """The checkpoint once `records` are delivered: the last sequence number per shard."""
        out = dict(checkpoint)
        for r in records:
            out[r.shard_id] = r.sequence_number
        return out

    @staticmethod
    def from_setting(setting: str, home: str, endpoint_url: str = "", region: str = "") -> Stream:
        """RECSYS_STREAM's value (validated by `Settings`): `local` or `kinesis://<name>`."""
        if setting.startswith("kinesis://"):
            return KinesisStream(setting[len("kinesis://"):], endpoint_url=endpoint_url, region=region)
        return LocalStream(Path(home) / "stream", "activity")


def _newline_before(f, position: int) -> int:
    """The offset of the last newline before `position` in a binary file, or -1: read backwards a
    block at a time, so a line of any length is found."""
    while position > 0:
        step = min(_TAIL_BLOCK, position)
        position -= step
        f.seek(position)
        found = f.read(step).rfind(b"\n")
        if found >= 0:
            return position + found
    return -1


class LocalStream(Stream):
    """A JSON-lines log: one line per record, appended under a file lock by any process."""

    def __init__(self, folder: str | Path, name: str):
        self.name = name
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / f"{name}.jsonl"
        self.path.touch(exist_ok=True)
        self._ends: dict[int, int] = {}  # sequence number -> the byte after its line, for checkpoints

    def put_records(self, records: Sequence[tuple[str, bytes]]) -> int:
        check_records(records)
        with open(self.path, "a+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                size = f.seek(0, os.SEEK_END)
                seq = self._last_sequence(f)
                now = dt.datetime.now(dt.timezone.utc).isoformat()
                # A writer killed mid-write left a torn line: end it, so it stays a line of its
                # own (readers pass over it) instead of swallowing this batch's first record.
                f.seek(max(0, size - 1))
                lines = [] if size == 0 or f.read(1) == b"\n" else ["\n"]
                for key, data in records:
                    seq += 1
                    lines.append(json.dumps({"seq": seq, "pk": key, "ts": now,
                                             "data": base64.b64encode(data).decode()}) + "\n")
                # Straight to the descriptor (O_APPEND), in as few writes as the kernel takes:
                # readers never see half a batch line, and on a full disk the part that did fit
                # is cut off again, so the batch is written whole or not at all.
                view = memoryview("".join(lines).encode())
                try:
                    while view:
                        view = view[os.write(f.fileno(), view):]
                except OSError as e:
                    if not disk_full_in(e):
                        raise
                    os.ftruncate(f.fileno(), size)
                    raise disk_full(str(self.path), e) from e
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
        return len(records)

    @staticmethod
    def _last_sequence(f, before: int | None = None) -> int:
        """The sequence number of the last complete record ending before byte `before` (default:
        the log's end), however long it is, or 0. (A fixed 64 KiB tail once missed a longer
        record, numbering restarted at 1, and a reader's checkpoint then skipped the new records.)
        Text after the last newline, a line torn by a writer killed mid-write, is passed over, as
        is any complete line that does not parse."""
        end = _newline_before(f, f.seek(0, os.SEEK_END) if before is None else before)
        try:
            while end >= 0:
                start = _newline_before(f, end) + 1
                f.seek(start)
                try:
                    return int(json.loads(f.read(end - start))["seq"])
                except (ValueError, KeyError, TypeError):
                    end = start - 1
            return 0
        finally:
            f.seek(0, os.SEEK_END)

    def read(self, checkpoint: dict[str, str], limit: int = 1000) -> list[StreamRecord]:
        """Records after the checkpoint's sequence number, read from its byte offset. Numbers
        only ever rise, from the record before that offset on: one at or below the number before
        it means the log was renumbered, and skipping it would lose records silently, so reading
        stops with a StreamError instead. (Records up to the checkpoint's number after the offset
        are skipped: a checkpoint written before offsets were exact may trail its number.)"""
        after = int(checkpoint.get(LOCAL_SHARD, "0"))
        offset = int(checkpoint.get("offset", "0"))
        out = []
        # Where each record read ends, for `checkpoint_after`; those behind the reader are dropped.
        self._ends = {seq: end for seq, end in self._ends.items() if seq >= after}
        with open(self.path, "rb") as f:
            last = self._last_sequence(f, offset) if offset else 0
            f.seek(offset)
            while len(out) < limit:
                at = f.tell()
                line = f.readline()
                if not line.endswith(b"\n"):
                    break  # the end, or a line still being written
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue  # a line torn by a writer killed mid-write: never acknowledged, never a record
                if rec["seq"] <= last:
                    raise StreamError(
                        f"the stream log {self.path} goes backwards at byte {at:,}: sequence {rec['seq']} after "
                        f"{last}; reading on would skip records, so nothing from there is delivered: move the "
                        "log aside, put its records from that byte on again, and restart deliver")
                last = rec["seq"]
                if rec["seq"] <= after:
                    continue
                out.append(StreamRecord(str(rec["seq"]), rec["pk"], base64.b64decode(rec["data"]),
                                        dt.datetime.fromisoformat(rec["ts"]), LOCAL_SHARD))
                self._ends[rec["seq"]] = f.tell()
        return out

    def checkpoint_after(self, checkpoint: dict[str, str], records: Sequence[StreamRecord]) -> dict[str, str]:
        out = super().checkpoint_after(checkpoint, records)
        if records and int(records[-1].sequence_number) in self._ends:
            out["offset"] = str(self._ends[int(records[-1].sequence_number)])
        return out


class KinesisStream(Stream):
    """A Kinesis data stream (or a compatible endpoint), all shards."""

    def __init__(self, name: str, endpoint_url: str = "", region: str = "", max_attempts: int = 6):
        import boto3

        self.name = name
        self.client = boto3.client("kinesis", endpoint_url=endpoint_url or None, region_name=region or None)
        self.max_attempts = max_attempts
        self._iterators: dict[str, str] = {}

    @property
    def arn(self) -> str:
        return self.client.describe_stream_summary(StreamName=self.name)["StreamDescriptionSummary"]["StreamARN"]

    def put_records(self, records: Sequence[tuple[str, bytes]]) -> int:
        """PutRecords in batches of 500, retrying throttled records with backoff."""
        check_records(records)
        written = 0
        for start in range(0, len(records), 500):
            pending = [{"PartitionKey": k, "Data": d} for k, d in records[start:start + 500]]
            for attempt in range(self.max_attempts):
                result = self.client.put_records(StreamName=self.name, Records=pending)
                failed = [rec for rec, res in zip(pending, result["Records"]) if "ErrorCode" in res]
                written += len(pending) - len(failed)
                if not failed:
                    break
                pending = failed
                time.sleep(min(2.0, 0.05 * 2 ** attempt))
            else:
                raise RuntimeError(f"{len(pending)} record(s) still throttled after {self.max_attempts} attempts")
        return written

    def shards(self) -> list[str]:
        return [s["ShardId"] for s in self.client.list_shards(StreamName=self.name)["Shards"]]

    def read(self, checkpoint: dict[str, str], limit: int = 1000) -> list[StreamRecord]:
        out: list[StreamRecord] = []
        for shard in self.shards():
            if shard not in self._iterators:  # a new reader starts from the checkpoint
                args = ({"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "StartingSequenceNumber": checkpoint[shard]}
                        if shard in checkpoint else {"ShardIteratorType": "TRIM_HORIZON"})
                self._iterators[shard] = self.client.get_shard_iterator(
                    StreamName=self.name, ShardId=shard, **args)["ShardIterator"]
            resp = self.client.get_records(ShardIterator=self._iterators[shard], Limit=max(1, limit - len(out)))
            self._iterators[shard] = resp["NextShardIterator"]
            for r in resp["Records"]:
                out.append(StreamRecord(r["SequenceNumber"], r["PartitionKey"], r["Data"],
                                        r["ApproximateArrivalTimestamp"].astimezone(dt.timezone.utc), shard))
            if len(out) >= limit:
                break
        return out

