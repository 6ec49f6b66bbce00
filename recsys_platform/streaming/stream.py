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

from recsys_platform.streaming.firehose import StreamRecord

LOCAL_SHARD = "shardId-000000000000"


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


class LocalStream(Stream):
    """A JSON-lines log: one line per record, appended under a file lock by any process."""

    def __init__(self, folder: str | Path, name: str):
        self.name = name
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / f"{name}.jsonl"
        self.path.touch(exist_ok=True)

    def put_records(self, records: Sequence[tuple[str, bytes]]) -> int:
        with open(self.path, "a+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                f.seek(0, os.SEEK_END)
                seq = self._last_sequence(f)
                now = dt.datetime.now(dt.timezone.utc).isoformat()
                lines = []
                for key, data in records:
                    seq += 1
                    lines.append(json.dumps({"seq": seq, "pk": key, "ts": now,
                                             "data": base64.b64encode(data).decode()}) + "\n")
                f.write("".join(lines).encode())  # one write: readers never see half a batch line
                f.flush()
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)
        return len(records)

    @staticmethod
    def _last_sequence(f) -> int:
        size = f.tell()
        if size == 0:
            return 0
        f.seek(max(0, size - 65536))
        tail = f.read().splitlines()
        f.seek(0, os.SEEK_END)
        for line in reversed(tail):
            try:
                return int(json.loads(line)["seq"])
            except (ValueError, KeyError):
                continue
        return 0

    def read(self, checkpoint: dict[str, str], limit: int = 1000) -> list[StreamRecord]:
        after = int(checkpoint.get(LOCAL_SHARD, "0"))
        offset = int(checkpoint.get("offset", "0"))
        out = []
        self._ends: dict[str, int] = {}
        with open(self.path, "rb") as f:
            f.seek(offset)
            while len(out) < limit:
                line = f.readline()
                if not line.endswith(b"\n"):
                    break  # the end, or a line still being written
                rec = json.loads(line)
                if rec["seq"] <= after:
                    continue
                out.append(StreamRecord(str(rec["seq"]), rec["pk"], base64.b64decode(rec["data"]),
                                        dt.datetime.fromisoformat(rec["ts"]), LOCAL_SHARD))
                self._ends[str(rec["seq"])] = f.tell()
        return out

    def checkpoint_after(self, checkpoint: dict[str, str], records: Sequence[StreamRecord]) -> dict[str, str]:
        out = super().checkpoint_after(checkpoint, records)
        if records and records[-1].sequence_number in getattr(self, "_ends", {}):
            out["offset"] = str(self._ends[records[-1].sequence_number])
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

