"""An hour of the stream as implicit feedback: one row per browse or cart item of each valid event.

The events are read back from what the stream delivered that hour: the recommendation records
(`streaming.records.event_of` gives each its event) and the processing-failed records whose event
was valid but got no answer (the inference failed, a product was unknown), so feedback never
depends on the recommendation having worked. An event is identified by its content (the JSON as
the sales platform sent it, keys sorted): a record Firehose delivered twice, or a failed record
redriven into the same hour, counts once; rerunning an hour rewrites the same file. An event
redriven into a *later* hour appears in both: `read_window` keeps each interaction once (the
earliest hour), and the asset counts such repeats.

`<lake>/interactions/hour=YYYY-MM-DD-HH/part-00000.snappy.parquet`, one row per item:
interaction_id (event key:item index), customer, product, kind (`cart` or `browse`), quantity,
session, event time (the event's `event_time`, else when the stream received it), the
recommendation it acted on, the answer it got (null when it failed) and the customer's features
(so a customer seen only in the stream can be embedded by the next training).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from recsys_platform.storage import lake
from recsys_platform.storage.object_store import ObjectStore
from recsys_platform.streaming.events import Event, EventError, decode_record, parse_event
from recsys_platform.streaming.recommendations import (
    COLUMN,
    HourObjects,
    failed_lines,
    hour_keys,
    lake_key,
    read_lines,
    to_row,
)
from recsys_platform.streaming.records import event_of

DATASET = "interactions"
CART, BROWSE = "cart", "browse"
KEYS = ("interaction_id", "customer_number", "product_code", "session_id")
SCHEMA = pa.schema([
    ("interaction_id", pa.string()), ("customer_number", pa.int64()), ("product_code", pa.string()),
    ("kind", pa.string()), ("quantity", pa.int64()), ("session_id", pa.string()),
    ("event_time", pa.timestamp("us", tz="UTC")), ("acted_on_recommendation_id", pa.string()),
    ("recommendation_id", pa.string()), ("model_version", pa.string()),
    ("city", pa.string()), ("country", pa.string()), ("credit_limit", pa.float64()),
])


def event_key(event: dict) -> str:
    """An event's identity: its content as sent (a redelivered copy has the same)."""
    return hashlib.sha1(json.dumps(event, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:20]


@dataclass
class HourEvents:
    """One hour's valid events, each once (delivered ones first), with what they got."""

    events: dict[str, tuple[Event, dt.datetime | None, dict | None]] = field(default_factory=dict)
    invalid: int = 0      # records whose event breaks the contract: not feedback
    repeated: int = 0     # copies of an event already read (redeliveries, a redrive in the same hour)
    unanswered: int = 0   # valid events whose recommendation failed (still feedback)

    def add(self, obj: dict, event: Event, arrived: dt.datetime | None, answer: dict | None) -> None:
        key = event_key(obj)
        if key in self.events:
            self.repeated += 1
        else:
            self.events[key] = (event, arrived, answer)
            self.unanswered += answer is None


def hour_events(store: ObjectStore, objects: HourObjects) -> HourEvents:
    """The valid events of an hour's objects (`hour_keys`): delivered records, then failed ones."""
    out = HourEvents()
    for key in objects.delivered:
        for _, record in read_lines(store.read_bytes(key), key).values:
            try:
                row = to_row(record, key)
            except ValueError:
                continue  # off the contract: the compaction rejects and keeps it
            obj = event_of(record)
            try:
                event = parse_event(obj)
            except EventError:
                out.invalid += 1
                continue
            out.add(obj, event, row["arrived_at"], {k: row[k] for k in ("recommendation_id", "model_version")})
    for _, failure in failed_lines(store, objects).values:
        raw = failure.get("rawData") if isinstance(failure, dict) else None
        try:
            obj, event = decode_record(raw)
        except EventError:
            out.invalid += 1
            continue
        stamp = failure.get("arrivalTimestamp")
        arrived = dt.datetime.fromtimestamp(stamp / 1000, dt.timezone.utc) if isinstance(stamp, int) else None
        out.add(obj, event, arrived, None)
    return out


def to_table(events: HourEvents) -> pa.Table:
    rows = []
    for key, (event, arrived, answer) in events.events.items():
        when = event.event_time or arrived
        answer = answer or {}
        for n, item in enumerate(event.browse_history):
            rows.append({
                "interaction_id": f"{key}:{n}", "customer_number": event.customer_number,
                "product_code": item.product_code, "kind": CART if item.in_shopping_cart else BROWSE,
                "quantity": item.quantity, "session_id": event.session_id, "event_time": when,
                "acted_on_recommendation_id": event.acted_on, "recommendation_id": answer.get("recommendation_id"),
                "model_version": answer.get("model_version"), "city": event.city, "country": event.country,
                "credit_limit": event.credit_limit})
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    return table.sort_by([("event_time", "ascending"), ("interaction_id", "ascending")]) if rows else table


@dataclass(frozen=True)
class HourInteractions:
    table: pa.Table
    events: HourEvents
    objects: HourObjects


def build_hour(recs: ObjectStore, lake_store: ObjectStore, hour: dt.datetime) -> HourInteractions:
    """Read the hour's events from the recommendations bucket and write its interactions (one
    atomic file; a rerun rewrites the same one)."""
    objects = hour_keys(recs, hour)
    events = hour_events(recs, objects)
    table = to_table(events)
    lake_store.write_bytes(lake.partition_file(DATASET, COLUMN, lake_key(hour)),
                           lake.encode_parquet(table))
    return HourInteractions(table, events, objects)


def missing_keys(table: pa.Table) -> dict[str, int]:
    """Null count per key column (each must be present)."""
    return {c: table.column(c).null_count for c in KEYS if table.column(c).null_count}


def duplicated_ids(table: pa.Table) -> list[str]:
    counts = pc.value_counts(table.column("interaction_id"))
    return [c["values"].as_py() for c in counts if c["counts"].as_py() > 1]


def read_window(store: ObjectStore, hours: list[str]) -> pa.Table:
    """The interactions of these hour keys (`YYYY-MM-DD-HH`), each interaction once: an event
    redriven into a later hour is kept in the earliest."""
    table = lake.read_partitions(store, DATASET, COLUMN, hours)
    if not table.num_rows:
        return SCHEMA.empty_table()
    table = table.sort_by([(COLUMN, "ascending"), ("interaction_id", "ascending")])
    ids = table.column("interaction_id").to_pylist()
    seen: set[str] = set()
    keep = [not (i in seen or seen.add(i)) for i in ids]
    return table.filter(pa.array(keep)).select(SCHEMA.names)
