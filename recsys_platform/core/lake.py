"""Hive-partitioned Parquet datasets in the lake: staged by Spark, published one partition at a time.

Each partition folder holds exactly one file with a fixed name, so replacing a partition is one
atomic object write (a rename locally, one PUT on S3): a reader sees the old partition or the new
one, never a mix, and a failed run leaves every partition as it was or fully replaced.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from recsys_platform.core.object_store import ObjectStore

PART_FILE = "part-00000.snappy.parquet"


def partition_dir(column: str, key: str) -> str:
    return f"{column}={key}"


def staged_files(staging_dir: str, column: str, key: str) -> list[str]:
    folder = os.path.join(staging_dir, partition_dir(column, key))
    if not os.path.isdir(folder):
        return []
    return sorted(
        os.path.join(folder, f) for f in os.listdir(folder)
        if f.endswith(".parquet") and not f.startswith((".", "_"))
    )


def _single_file(files: list[str], workdir: str) -> str:
    """One Parquet file for a partition (Spark writes one per task; merge if it wrote more)."""
    if len(files) == 1:
        return files[0]
    merged = os.path.join(workdir, f"merged-{os.getpid()}-{abs(hash(tuple(files)))}.parquet")
    pq.write_table(pa.concat_tables(pq.read_table(f) for f in files), merged, compression="snappy")
    return merged


def publish_partitions(store: ObjectStore, dataset: str, staging_dir: str, column: str,
                       keys: Iterable[str], threads: int = 8) -> dict[str, str]:
    """Replace each partition of `keys` in `<store>/<dataset>/` with its staged file.

    A key with no staged rows loses its partition (its source rows are gone). Returns, per key,
    'written' or 'removed'. Every partition write is atomic; partitions are independent.
    """
    keys = list(keys)

    def one(key: str) -> tuple[str, str]:
        folder = f"{dataset}/{partition_dir(column, key)}"
        files = staged_files(staging_dir, column, key)
        target = f"{folder}/{PART_FILE}"
        if files:
            store.upload_file(_single_file(files, staging_dir), target)
            stale = [o.key for o in store.list(folder) if o.key != target]
            for key_ in stale:  # leftovers of an older writer; ours is already in place
                store.delete(key_)
            return key, "written"
        for obj in store.list(folder):
            store.delete(obj.key)
        store.delete_dir(folder)
        return key, "removed"

    with ThreadPoolExecutor(max_workers=max(1, min(threads, len(keys)))) as pool:
        return dict(pool.map(one, keys))


def read_partitions(store: ObjectStore, dataset: str, column: str, keys: Iterable[str] | None = None) -> pa.Table:
    """Read partitions of a Hive-partitioned dataset back (all of them when `keys` is None)."""
    base = store.path(dataset)
    partitioning = pads.HivePartitioning.discover(infer_dictionary=False)
    if keys is None:
        if not store.exists(dataset):
            return pa.table({})
        ds = pads.dataset(base, filesystem=store.fs, format="parquet", partitioning=partitioning)
    else:
        paths = [store.path(f"{dataset}/{partition_dir(column, k)}/{PART_FILE}") for k in keys]
        paths = [p for p in paths if store.fs.get_file_info(p).type.name == "File"]
        if not paths:
            return pa.table({})
        ds = pads.dataset(paths, filesystem=store.fs, format="parquet", partitioning=partitioning,
                          partition_base_dir=base)
    return ds.to_table()


def list_partition_keys(store: ObjectStore, dataset: str, column: str) -> list[str]:
    prefix = f"{column}="
    return [d[len(prefix):] for d in store.list_dirs(dataset) if d.startswith(prefix)]
