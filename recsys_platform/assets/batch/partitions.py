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
