"""What every batch engine returns, and the source-side row count its checks compare against.

No Dagster import: the asset, the benchmarks and (in the AWS profile) the Glue job call an
engine's `build`, which replaces the requested partitions of `<lake>/ratings_ml_training/`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from recsys_platform.batch.contract import DATASET, RULES, Layout
from recsys_platform.batch.source import SourceDatabase
from recsys_platform.errors import DataQualityError
from recsys_platform.storage import lake
from recsys_platform.storage.object_store import ObjectStore


@dataclass(frozen=True)
class Violation:
    """One broken source rule (a name of contract.RULES): where, how many rows, and one example."""

    check: str
    table: str
    column: str
    count: int
    example: str

    def __post_init__(self) -> None:
        if self.check not in RULES:  # an engine may only report the contract's own rules
            raise ValueError(f"{self.check!r} is not a rule of the training-data contract: {sorted(RULES)}")

    def __str__(self) -> str:
        return f"{self.check}: {self.count} row(s) of {self.table}.{self.column}, e.g. {self.example}"

    def as_dict(self) -> dict:
        return {"check": self.check, "table": self.table, "column": self.column,
                "count": self.count, "example": self.example}


def refuse(violations: list[Violation]) -> None:
    """Raise DataQualityError naming every broken rule (nothing has been written)."""
    if violations:
        raise DataQualityError(
            "the source breaks the training-data contract, nothing was written: "
            + "; ".join(str(v) for v in violations), [v.as_dict() for v in violations])


@dataclass
class BuildResult:
    """Rows written, each requested partition's fate (`written` or `removed`) and row count."""

    rows: int
    partitions: dict[str, str]
    rows_per_partition: dict[str, int]
    extraction: str
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def written(self) -> int:
        return sum(1 for s in self.partitions.values() if s == "written")

    @property
    def removed(self) -> int:
        return sum(1 for s in self.partitions.values() if s == "removed")


def source_row_count(source: SourceDatabase, layout: Layout, keys: Sequence[str]) -> int:
    """Ratings in the source for these partitions (what the lake must hold after the build)."""
    return source.count_ratings(layout.selection(keys))


def reconcile(store: ObjectStore, keys: Sequence[str], counts: dict[str, int], layout: Layout,
              extraction: str, timings: dict[str, float], log=print) -> BuildResult:
    """After an engine wrote the partitions it got rows for: refuse rows outside the request,
    remove the requested partitions that are now empty (their source rows are gone), report."""
    extra = set(counts) - set(keys)
    if extra:  # cannot happen with a correct filter; refuse to hide it
        raise RuntimeError(f"extraction returned rows outside the requested partitions: {sorted(extra)[:5]}")
    t = time.perf_counter()
    partitions = {k: "written" for k in counts}
    partitions.update(lake.remove_partitions(store, DATASET, layout.column, [k for k in keys if k not in counts]))
    timings["publish_s"] = time.perf_counter() - t
    rows = sum(counts.values())
    log(f"{DATASET}: {rows} rows in {len(partitions)} partitions via {extraction} ({timings})")
    return BuildResult(rows, partitions, {k: counts.get(k, 0) for k in keys}, extraction, timings)
