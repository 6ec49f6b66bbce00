"""Compacting an hour of delivered recommendations into one Parquet file, with its metrics.

What the bucket holds is not trusted: an object may be truncated (a killed writer), binary, or
hold a record that breaks the contract. Each line is checked on its own; a bad line or object is
counted, named in the metrics and kept for inspection in the lake's `recommendations_rejected/`,
and never fails the hour. Writers' temporaries and keys outside `YYYY/MM/DD/HH/<object>` are
ignored (counted only).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from numbers import Real

import pyarrow as pa

from recsys_platform.storage import lake
from recsys_platform.storage.object_store import ObjectStore, is_hidden
from recsys_platform.streaming import firehose
from recsys_platform.streaming.records import ACTED_ON

DATASET = "recommendations"
REJECTED = "recommendations_rejected"  # the hour's bad lines: object, line number, reason, text
REJECTED_FILE = "part-00000.ndjson"
REJECTED_TEXT_CHARS = 1000  # of each bad line kept; the object itself stays in the bucket
COLUMN = "hour"
REQUIRED = ("session_id", "customer_number", "browse_history", "recommended_items", "similar_items",
            "model_version", "processed_at")
SCHEMA = pa.schema([
    ("session_id", pa.string()), ("customer_number", pa.int64()), ("city", pa.string()),
    ("country", pa.string()), ("credit_limit", pa.float64()), ("browse_history", pa.string()),
    ("recommended_items", pa.list_(pa.struct([("id", pa.string()), ("score", pa.float64())]))),
    ("similar_product_code", pa.string()),
    ("similar_items", pa.list_(pa.struct([("id", pa.string()), ("score", pa.float64())]))),
    ("model_version", pa.string()), ("processed_at", pa.timestamp("us", tz="UTC")), ("source_object", pa.string()),
    ("recommendation_id", pa.string()),  # null for records delivered before answers carried one
    # Null where the event or an older record does not say: when the customer acted, the list they
    # acted on, when the stream received the event, when the object holding the answer was written.
    ("event_time", pa.timestamp("us", tz="UTC")), (ACTED_ON, pa.string()),
    ("arrived_at", pa.timestamp("us", tz="UTC")), ("written_at", pa.timestamp("us", tz="UTC")),
])


def _time(rec: dict, name: str) -> dt.datetime | None:
    """An optional ISO time field (UTC when it names no zone); ValueError when it is not one."""
    value = _optional(rec, name, str)
    if value is None:
        return None
    try:
        when = dt.datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{name} {value[:40]!r} is not an ISO time") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def hour_of(partition_key: str) -> dt.datetime:
    """Dagster's hourly key `YYYY-MM-DD-HH:MM` as a UTC datetime."""
    return dt.datetime.strptime(partition_key, "%Y-%m-%d-%H:%M").replace(tzinfo=dt.timezone.utc)


def lake_key(hour: dt.datetime) -> str:
    """An hour's partition key in the lake's folders: `YYYY-MM-DD-HH`."""
    return hour.strftime("%Y-%m-%d-%H")


def hour_folder(dataset: str, hour: dt.datetime) -> str:
    """The lake folder of one hour of `dataset` (DATASET or REJECTED): `<dataset>/hour=YYYY-MM-DD-HH`."""
    return f"{dataset}/{lake.partition_dir(COLUMN, lake_key(hour))}"


@dataclass(frozen=True)
class HourObjects:
    """One hour's objects: delivered, processing-failed, and ignored (writers' temporaries, hidden
    names, anything nested below the hour's folder)."""

    delivered: list[str]
    failed: list[str]
    ignored: list[str]
    written: dict[str, dt.datetime] = field(default_factory=dict)  # each read object's write time, as listed

    @property
    def read(self) -> list[str]:
        return self.delivered + self.failed


def hour_keys(store: ObjectStore, hour: dt.datetime) -> HourObjects:
    prefix = firehose.hour_prefix(hour)
    found: dict[bool, list[str]] = {False: [], True: []}
    ignored: list[str] = []
    written: dict[str, dt.datetime] = {}
    for failed, folder in ((False, prefix), (True, f"{firehose.FAILED_PREFIX}/{prefix}")):
        for obj in store.list(folder):
            name = obj.key[len(folder) + 1:]
            if "/" in name or is_hidden(name):
                ignored.append(obj.key)
                continue
            found[failed].append(obj.key)
            if obj.mtime_ns is not None:
                written[obj.key] = dt.datetime.fromtimestamp(obj.mtime_ns / 1e9, dt.timezone.utc)
    return HourObjects(found[False], found[True], ignored, written)


def _neighbours(value, name: str) -> list[dict]:
    if not isinstance(value, list) or not all(
            isinstance(n, dict) and isinstance(n.get("id"), str) and isinstance(n.get("score"), Real)
            and not isinstance(n.get("score"), bool) for n in value):
        raise ValueError(f"{name} is not a list of {{id, score}}")
    return [{"id": n["id"], "score": float(n["score"])} for n in value]


def _optional(rec: dict, name: str, kind: type | tuple[type, ...]):
    value = rec.get(name)
    if value is not None and (not isinstance(value, kind) or isinstance(value, bool)):
        raise ValueError(f"{name} is {type(value).__name__}, not {getattr(kind, '__name__', 'a number')}")
    return value


def to_row(rec, key: str, written_at: dt.datetime | None = None) -> dict:
    """One record of the contract (in object `key`, written at `written_at`) as a row of SCHEMA;
    ValueError names what is wrong."""
    if not isinstance(rec, dict):
        raise ValueError(f"a JSON {type(rec).__name__}, not an object")
    missing = [f for f in REQUIRED if f not in rec]
    if missing:
        raise ValueError(f"missing {', '.join(missing)}")
    for name in ("session_id", "model_version", "processed_at"):
        if not isinstance(rec[name], str):
            raise ValueError(f"{name} is {type(rec[name]).__name__}, not a string")
    if not isinstance(rec["customer_number"], int) or isinstance(rec["customer_number"], bool):
        raise ValueError(f"customer_number is {type(rec['customer_number']).__name__}, not an integer")
    if not isinstance(rec["browse_history"], list):
        raise ValueError("browse_history is not a list")
    similar = rec["similar_items"]
    if not isinstance(similar, dict):
        raise ValueError(f"similar_items is {type(similar).__name__}, not an object")
    anchor = _optional(similar, "product_code", str)
    processed = _time(rec, "processed_at")
    return {
        "session_id": rec["session_id"], "customer_number": rec["customer_number"],
        "city": _optional(rec, "city", str), "country": _optional(rec, "country", str),
        "credit_limit": _optional(rec, "credit_limit", Real), "browse_history": json.dumps(rec["browse_history"]),
        "recommended_items": _neighbours(rec["recommended_items"], "recommended_items"),
        "similar_product_code": anchor,
        "similar_items": _neighbours(similar.get("similar_items", []), "similar_items.similar_items"),
        "model_version": rec["model_version"],
        "processed_at": processed, "source_object": key, "recommendation_id": _optional(rec, "recommendation_id", str),
        "event_time": _time(rec, "event_time"), ACTED_ON: _optional(rec, ACTED_ON, str),
        "arrived_at": _time(rec, "arrived_at"), "written_at": written_at,
    }


@dataclass
class ObjectLines:
    """What one object holds, line by line: JSON values, and the lines that are not."""

    values: list[tuple[int, object]] = field(default_factory=list)  # (line number, value)
    rejected: list[dict] = field(default_factory=list)  # {object, line, reason, text}


def rejection(key: str, line: int, reason: str, text: str) -> dict:
    return {"object": key, "line": line, "reason": reason, "text": text[:REJECTED_TEXT_CHARS]}


def read_lines(data: bytes, key: str, seen: set[str] | None = None) -> ObjectLines:
    """Parse an NDJSON object line by line (line 0: the whole object). `seen` drops a line
    already read (a redelivered identical record counts once)."""
    out = ObjectLines()
    try:
        text = data.decode()
    except UnicodeDecodeError as e:
        out.rejected.append(rejection(key, 0, f"not UTF-8 text ({e.reason} at byte {e.start})",
                                      data[:REJECTED_TEXT_CHARS].decode(errors="replace")))
        return out
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or (seen is not None and line in seen):
            continue
        if seen is not None:
            seen.add(line)
        try:
            out.values.append((number, json.loads(line)))
        except ValueError as e:
            out.rejected.append(rejection(key, number, f"not JSON ({e})", line))
    return out


def failed_lines(store: ObjectStore, objects: HourObjects) -> ObjectLines:
    """The hour's processing-failed records (Firehose's error records), and its lines that are not JSON."""
    out = ObjectLines()
    for key in objects.failed:
        lines = read_lines(store.read_bytes(key), key)
        out.values += lines.values
        out.rejected += lines.rejected
    return out


def records(data: bytes, key: str) -> list[dict]:
    """The valid records of one delivered object (bad lines left out), for readers like the demo."""
    rows = []
    for _, value in read_lines(data, key).values:
        try:
            to_row(value, key)
            rows.append(value)
        except ValueError:
            continue
    return rows


@dataclass(frozen=True)
class HourCompaction:
    table: pa.Table  # the hour's valid records, as written to the lake
    rejected: list[dict]  # {object, line, reason, text}, as kept in REJECTED
    objects: HourObjects
    failed: int  # records Firehose could not process (processing-failed/)
    recommended_ids: set[str]

    @property
    def events(self) -> int:
        return self.table.num_rows + self.failed + len(self.rejected)

    @property
    def failure_rate(self) -> float:
        return self.failed / self.events if self.events else 0.0

    def rejected_objects(self) -> dict[str, str]:
        """Each object with rejected lines, and its first reason."""
        out: dict[str, str] = {}
        for r in self.rejected:
            out.setdefault(r["object"], f"line {r['line']}: {r['reason']}" if r["line"] else r["reason"])
        return out


def compact_hour(recs: ObjectStore, lake_store: ObjectStore, hour: dt.datetime) -> HourCompaction:
    """Read the hour's objects, write `<lake>/recommendations/hour=<YYYY-MM-DD-HH>/` atomically (and
    its rejected lines beside it, or remove stale ones). Rerunning the hour rewrites the same files."""
    objects = hour_keys(recs, hour)
    rows, rejected, seen = [], [], set()
    for key in objects.delivered:
        lines = read_lines(recs.read_bytes(key), key, seen)
        rejected += lines.rejected
        for number, value in lines.values:
            try:
                rows.append(to_row(value, key, objects.written.get(key)))
            except ValueError as e:
                rejected.append(rejection(key, number, str(e), json.dumps(value)))
    failures = failed_lines(recs, objects)
    rejected += failures.rejected
    failed = len(failures.values)
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    lake_store.write_bytes(lake.partition_file(DATASET, COLUMN, lake_key(hour)), lake.encode_parquet(table))
    rejected_key = f"{hour_folder(REJECTED, hour)}/{REJECTED_FILE}"
    if rejected:
        lake_store.write_bytes(rejected_key, "".join(json.dumps(r) + "\n" for r in rejected).encode())
    else:
        lake_store.delete(rejected_key)
    return HourCompaction(table, rejected, objects, failed,
                          {i["id"] for r in rows for i in r["recommended_items"]})
