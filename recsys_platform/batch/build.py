"""What every batch engine returns, and the source-side row count its checks compare against.

No Dagster import: the asset, the benchmarks and (in the AWS profile) the Glue job call an
engine's `build`, which replaces the requested partitions of `<lake>/ratings_ml_training/`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from recsys_platform.batch.contract import Layout
from recsys_platform.batch.source import SourceDatabase


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
