"""Partitions of the training data: one per customer, or static hash buckets at large scale."""

from __future__ import annotations

import hashlib

import dagster as dg

from recsys_platform.batch.contract import Layout

CUSTOMERS = dg.DynamicPartitionsDefinition(name="customers")


def partitions_for(layout: Layout) -> dg.PartitionsDefinition:
    """Dynamic per-customer partitions, or `customer_bucket` 0..N-1 (small-files safe)."""
    if layout.buckets:
        return dg.StaticPartitionsDefinition([str(k) for k in range(layout.buckets)])
    return CUSTOMERS


def partition_versions(layout: Layout, customer_versions: dict[int, str]) -> dict[str, str]:
    """Per partition key, the data version: a customer's own, or a digest of its bucket's."""
    if not layout.buckets:
        return {str(c): v for c, v in customer_versions.items()}
    per_bucket: dict[str, list[str]] = {str(k): [] for k in range(layout.buckets)}
    for c in sorted(customer_versions):
        per_bucket[layout.partition_of(c)].append(f"{c}:{customer_versions[c]}")
    return {k: hashlib.sha1("|".join(v).encode()).hexdigest()[:16] if v else "empty"
            for k, v in per_bucket.items()}


def latest_partition_metadata(instance: dg.DagsterInstance, asset_key: dg.AssetKey,
                              page: int = 10_000) -> dict[str, dict]:
    """Per partition, the metadata of its latest materialization: what the last successful build of
    it recorded (a failed run records none)."""
    seen: dict[str, dict] = {}
    cursor = None
    while True:
        result = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=asset_key), limit=page,
                                                 cursor=cursor, ascending=False)
        for record in result.records:
            if record.partition_key is not None and record.partition_key not in seen:
                seen[record.partition_key] = record.asset_materialization.metadata
        if not result.has_more:
            return seen
        cursor = result.cursor


def lake_differences(built: dict[str, int], lake: dict[str, int], examples: int = 3) -> list[str]:
    """How the lake's partitions (key -> rows) differ from what their last successful builds
    wrote (key -> rows; 0: removed); empty when they match."""
    never = sorted(set(lake) - set(built), key=_order)
    unbuilt = sorted((k for k in set(lake) & set(built) if built[k] != lake[k]), key=_order)
    missing = sorted((k for k, n in built.items() if n and k not in lake), key=_order)
    out = []
    if never:
        out.append(f"{len(never)} partition(s) in the lake that no successful build wrote (e.g. "
                   f"{', '.join(never[:examples])}: a failed or interrupted build)")
    if unbuilt:
        out.append(f"{len(unbuilt)} partition(s) whose rows differ from their last successful build (e.g. "
                   + ", ".join(f"{k}: {lake[k]} in the lake, {built[k]} built" for k in unbuilt[:examples]) + ")")
    if missing:
        out.append(f"{len(missing)} built partition(s) missing from the lake (e.g. {', '.join(missing[:examples])})")
    return out


def _order(key: str) -> tuple[int, str]:
    return (int(key), key) if key.isdigit() else (1 << 62, key)
