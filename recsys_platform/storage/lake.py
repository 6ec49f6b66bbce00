"""Hive-partitioned Parquet datasets in the lake, written one atomic file per partition.

Each partition folder holds exactly one file with a fixed name, so replacing a partition is one
atomic object write (a rename locally, one PUT on S3): a reader sees the old partition or the new
one, never a mix, and a failed run leaves every partition as it was or fully replaced.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from recsys_platform.storage.object_store import ObjectStore

PART_FILE = "part-00000.snappy.parquet"


def partition_dir(column: str, key: str) -> str:
    return f"{column}={key}"


def partition_file(dataset: str, column: str, key: str) -> str:
    return f"{dataset}/{partition_dir(column, key)}/{PART_FILE}"


def encode_parquet(table: pa.Table) -> bytes:
    """Snappy Parquet bytes; the same table always gives the same bytes."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="snappy")
    return sink.getvalue().to_pybytes()


_STORES: dict[tuple[str, str], ObjectStore] = {}


class PartitionWriter:
    """A Spark `mapInArrow` function: writes each partition of a sorted stream as its one file.

    Spark hands a task its rows as Arrow batches, sorted by the partition column; a partition's
    rows may span batches, so rows are buffered until the key changes, then encoded and written.
    Memory is bounded by the largest partition. Picklable (it carries the store's URL, not a
    client), so Spark ships it to executors; each Python worker opens the store once. The
    partition column lives in the folder name and is dropped from the file.
    """

    RESULT_SCHEMA = "key string, rows long"

    def __init__(self, store_url: str, endpoint_url: str, dataset: str, column: str,
                 finish: Callable[[pa.Table], pa.Table] | None = None):
        self.store_url, self.endpoint_url = store_url, endpoint_url
        self.dataset, self.column = dataset, column
        # Turns a partition's rows into the file's table (order, types); default: drop the column.
        self.finish = finish

    def _store(self) -> ObjectStore:
        ident = (self.store_url, self.endpoint_url)
        if ident not in _STORES:
            _STORES[ident] = ObjectStore.from_url(self.store_url, endpoint_url=self.endpoint_url)
        return _STORES[ident]

    def write(self, key: str, pieces: list[pa.RecordBatch]) -> int:
        table = pa.Table.from_batches(pieces)
        body = self.finish(table) if self.finish else table.drop_columns([self.column])
        self._store().write_bytes(partition_file(self.dataset, self.column, key), encode_parquet(body))
        return body.num_rows

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        # One small result batch per task, not per partition: each batch crossing back to the
        # JVM costs about a millisecond, as much as writing a partition file.
        keys, rows = [], []
        for key, n in self.write_all(batches):
            keys.append(key)
            rows.append(n)
        yield pa.RecordBatch.from_pydict({"key": keys, "rows": rows},
                                         schema=pa.schema([("key", pa.string()), ("rows", pa.int64())]))

    def groups(self, batches: Iterable[pa.RecordBatch]) -> Iterator[tuple[str, list[pa.RecordBatch]]]:
        """(key, its rows) for a stream of batches sorted by the partition column."""
        current, pending = None, []
        for batch in batches:
            keys = batch.column(self.column).to_numpy(zero_copy_only=False)
            if not len(keys):
                continue
            cuts = [0, *(np.flatnonzero(keys[1:] != keys[:-1]) + 1), len(keys)]
            for start, stop in zip(cuts[:-1], cuts[1:]):
                key = str(keys[start])
                if current is not None and key != current:
                    yield current, pending
                    pending = []
                current = key
                pending.append(batch.slice(start, stop - start))
        if current is not None:
            yield current, pending

    def write_all(self, batches: Iterable[pa.RecordBatch], threads: int = 1) -> Iterator[tuple[str, int]]:
        """Write every partition of a sorted stream; yields (key, rows) as each file lands.

        With `threads > 1`, partitions are encoded and written on a pool (Parquet encoding and
        the file or S3 write release the GIL) while the stream is read; at most `2 x threads`
        partitions are in flight, so memory stays bounded by a few partitions.
        """
        if threads <= 1:
            for key, pieces in self.groups(batches):
                yield key, self.write(key, pieces)
            return
        in_flight: deque = deque()
        with ThreadPoolExecutor(max_workers=threads) as pool:
            for key, pieces in self.groups(batches):
                in_flight.append((key, pool.submit(self.write, key, pieces)))
                while len(in_flight) >= 2 * threads:
                    done_key, future = in_flight.popleft()
                    yield done_key, future.result()
            while in_flight:
                done_key, future = in_flight.popleft()
                yield done_key, future.result()

    def as_function(self):
        """A plain annotated function (PySpark infers the UDF kind from the type hints)."""

        def write_partitions(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            return self(batches)

        return write_partitions


def remove_partitions(store: ObjectStore, dataset: str, column: str, keys: Iterable[str],
                      threads: int = 8) -> dict[str, str]:
    """Delete the partitions of `keys` (their source rows are gone); returns key -> 'removed'."""
    keys = list(keys)

    def one(key: str) -> tuple[str, str]:
        folder = f"{dataset}/{partition_dir(column, key)}"
        for obj in store.list(folder):
            store.delete(obj.key)
        store.delete_dir(folder)
        return key, "removed"

    if not keys:
        return {}
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
        paths = [store.path(partition_file(dataset, column, k)) for k in keys]
        paths = [p for p in paths if store.fs.get_file_info(p).type.name == "File"]
        if not paths:
            return pa.table({})
        ds = pads.dataset(paths, filesystem=store.fs, format="parquet", partitioning=partitioning,
                          partition_base_dir=base)
    return ds.to_table()


def list_partition_keys(store: ObjectStore, dataset: str, column: str) -> list[str]:
    prefix = f"{column}="
    return [d[len(prefix):] for d in store.list_dirs(dataset) if d.startswith(prefix)]
