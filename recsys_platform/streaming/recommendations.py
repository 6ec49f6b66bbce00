"""Compacting an hour of delivered recommendations into one Parquet file, with its metrics."""

from __future__ import annotations

import datetime as dt
import json

import pyarrow as pa

from recsys_platform.storage import lake
from recsys_platform.storage.object_store import ObjectStore
from recsys_platform.streaming import firehose

DATASET = "recommendations"
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
])


def hour_of(partition_key: str) -> dt.datetime:
    """Dagster's hourly key `YYYY-MM-DD-HH:MM` as a UTC datetime."""
    return dt.datetime.strptime(partition_key, "%Y-%m-%d-%H:%M").replace(tzinfo=dt.timezone.utc)


def hour_keys(store: ObjectStore, hour: dt.datetime) -> tuple[list[str], list[str]]:
    """Object keys of one hour: delivered, and processing-failed."""
    prefix = firehose.hour_prefix(hour)
    ok = [o.key for o in store.list(prefix)]
    failed = [o.key for o in store.list(f"{firehose.FAILED_PREFIX}/{prefix}")]
    return ok, failed


def compact_hour(recs: ObjectStore, lake_store: ObjectStore, hour: dt.datetime) -> dict:
    """Read the hour's objects, write `<lake>/recommendations/hour=<YYYY-MM-DD-HH>/` atomically,
    and return the rows (for checks) and metrics. Rerunning the hour rewrites the same file."""
    ok_keys, failed_keys = hour_keys(recs, hour)
    rows, bad_rows, seen = [], [], set()
    for key in ok_keys:
        for line in recs.read_bytes(key).decode().splitlines():
            if not line.strip() or line in seen:  # a redelivered identical record counts once
                continue
            seen.add(line)
            rec = json.loads(line)
            missing = [f for f in REQUIRED if f not in rec]
            if missing:
                bad_rows.append({"object": key, "missing": missing})
                continue
            rows.append({
                "session_id": rec["session_id"], "customer_number": rec["customer_number"],
                "city": rec.get("city"), "country": rec.get("country"), "credit_limit": rec.get("credit_limit"),
                "browse_history": json.dumps(rec["browse_history"]),
                "recommended_items": rec["recommended_items"],
                "similar_product_code": rec["similar_items"].get("product_code"),
                "similar_items": rec["similar_items"].get("similar_items", []),
                "model_version": rec["model_version"],
                "processed_at": dt.datetime.fromisoformat(rec["processed_at"]), "source_object": key,
            })
    failures = sum(len(recs.read_bytes(k).decode().splitlines()) for k in failed_keys)
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
    lake_store.write_bytes(lake.partition_file(DATASET, COLUMN, hour.strftime("%Y-%m-%d-%H")), lake.encode_parquet(table))
    events = len(rows) + failures + len(bad_rows)
    recommended = {i["id"] for r in rows for i in r["recommended_items"]}
    return {
        "table": table, "bad_rows": bad_rows, "objects": len(ok_keys) + len(failed_keys),
        "metrics": {"events": events, "delivered": len(rows), "failed": failures,
                    "failure_rate": failures / events if events else 0.0,
                    "users": len({r["customer_number"] for r in rows}),
                    "model_versions": sorted({r["model_version"] for r in rows}),
                    "recommended_distinct_items": len(recommended)},
        "recommended_ids": recommended,
    }
