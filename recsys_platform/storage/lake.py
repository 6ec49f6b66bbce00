"""Hive-partitioned Parquet datasets in the lake, written one atomic file per partition.

Each partition folder holds exactly one file with a fixed name, so replacing a partition is one
atomic object write (a rename locally, one PUT on S3): a reader sees the old partition or the new
one, never a mix, and a failed run leaves every partition as it was or fully replaced.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from recsys_platform.storage.object_store import ObjectStore

PART_FILE = "part-00000.snappy.parquet"


def runs(keys: np.ndarray) -> list[tuple[int, int]]:
    """(start, stop) of each run of equal adjacent values in `keys`."""
    cuts = [0, *(np.flatnonzero(keys[1:] != keys[:-1]) + 1), len(keys)]
    return list(zip(cuts[:-1], cuts[1:]))


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
                 prepare: Callable[[pa.Table], pa.Table] | None = None, chunk_rows: int = 65_536):
        self.store_url, self.endpoint_url = store_url, endpoint_url
        self.dataset, self.column = dataset, column
        # Turns rows of whole partitions into what their files hold (order, types), keeping the
        # partition column; applied to chunks of about `chunk_rows` rows, not partition by partition.
        self.prepare = prepare
        self.chunk_rows = chunk_rows

    def _store(self) -> ObjectStore:
        ident = (self.store_url, self.endpoint_url)
        if ident not in _STORES:
            _STORES[ident] = ObjectStore.from_url(self.store_url, endpoint_url=self.endpoint_url)
        return _STORES[ident]

    def write(self, key: str, table: pa.Table) -> int:
        """One partition's rows (with the partition column, which the folder name carries) as its file."""
        body = table.drop_columns([self.column])
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

    def _chunks(self, batches: Iterable[pa.RecordBatch]) -> Iterator[pa.Table]:
        """Tables of whole partitions, about `chunk_rows` rows each, from a stream sorted by the
        partition column (a partition is never split between chunks)."""
        current, pending, rows = None, [], 0
        for batch in batches:
            keys = batch.column(self.column).to_numpy(zero_copy_only=False)
            if not len(keys):
                continue
            for start, stop in runs(keys):
                key = keys[start]
                if current is not None and key != current and rows >= self.chunk_rows:
                    yield pa.Table.from_batches(pending)
                    pending, rows = [], 0
                current = key
                pending.append(batch.slice(start, stop - start))
                rows += stop - start
        if pending:
            yield pa.Table.from_batches(pending)

    def partitions(self, batches: Iterable[pa.RecordBatch]) -> Iterator[tuple[str, pa.Table]]:
        """(key, its rows as prepared) for a stream of batches sorted by the partition column."""
        for chunk in self._chunks(batches):
            if self.prepare:
                chunk = self.prepare(chunk)
            keys = chunk.column(self.column).to_numpy()
            for start, stop in runs(keys):
                yield str(keys[start]), chunk.slice(start, stop - start)

    def write_all(self, batches: Iterable[pa.RecordBatch], threads: int = 1) -> Iterator[tuple[str, int]]:
        """Write every partition of a stream sorted by the partition column; yields (key, rows)."""
        return self.write_partitions(self.partitions(batches), threads)

    def write_partitions(self, items: Iterable[tuple[str, pa.Table]], threads: int = 1) -> Iterator[tuple[str, int]]:
        """Write prepared (key, rows) pairs; yields (key, rows) as each file lands.

        With `threads > 1`, partitions are encoded and written on a pool (Parquet encoding and
        the file or S3 write release the GIL) while the next ones are produced; at most
        `2 x threads` are in flight, so memory stays bounded by a few partitions.
        """
        if threads <= 1:
            for key, table in items:
                yield key, self.write(key, table)
            return
        in_flight: deque = deque()
        with ThreadPoolExecutor(max_workers=threads) as pool:
            for key, table in items:
                in_flight.append((key, pool.submit(self.write, key, table)))
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


def spill_by_partition(batches: Iterable[pa.RecordBatch], column: str, folder: str) -> dict[str, str]:
    """Split an unsorted stream into one Arrow IPC file per value of `column` under `folder`;
    returns key -> path. Memory holds one batch; a partition's rows land in its own file."""
    writers: dict[str, pa.ipc.RecordBatchFileWriter] = {}
    paths: dict[str, str] = {}
    try:
        for batch in batches:
            if not batch.num_rows:
                continue
            order = pc.sort_indices(batch, [(column, "ascending")])
            batch = batch.take(order)
            keys = batch.column(column).to_numpy(zero_copy_only=False)
            for start, stop in runs(keys):
                key = str(keys[start])
                if key not in writers:
                    paths[key] = os.path.join(folder, f"{len(paths)}.arrow")
                    writers[key] = pa.ipc.new_file(paths[key], batch.schema)
                writers[key].write_batch(batch.slice(start, stop - start))
    finally:
        for writer in writers.values():
            writer.close()
    return paths


def read_spilled(path: str) -> pa.Table:
    with pa.memory_map(path) as source:
        return pa.ipc.open_file(source).read_all()
