"""A full disk, for real (a small tmpfs): one line naming the path and the fix, nothing
half-written, and a model that refuses the half-built lake the failure leaves."""

import subprocess
import sys
from pathlib import Path

import pytest

from recsys_platform.batch.contract import DATASET
from recsys_platform.storage import lake
from recsys_platform.storage.object_store import ObjectStore
from tests.browser import REPO, demo_env


@pytest.fixture
def full_disk(tmp_path):
    """A 1 MiB tmpfs with about 100 KiB free (root mounts it, as CI runs; no skip without it)."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True, text=True)
    if done.returncode:
        pytest.fail(f"cannot mount a tmpfs for the full-disk tests (run them as root): {done.stderr.strip()}",
                    pytrace=False)
    try:
        (mount / "filler").write_bytes(b"\0" * 920 * 1024)
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def _cli(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "recsys_platform.cli", *args], cwd=REPO,
                          env={**demo_env(home), **env}, capture_output=True, text=True, timeout=600)


def test_a_build_on_a_full_disk_names_the_path_and_leaves_whole_partitions(full_disk, tmp_path):
    from recsys_platform.vectors.embedded import stop_embedded

    home = tmp_path / "home"
    lake_url = (full_disk / "lake").as_uri()
    try:
        proc = _cli(home, "demo", RECSYS_LAKE_URL=lake_url)
    finally:
        stop_embedded(home / "pgdata")  # started once the source check passed
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    (line,) = proc.stderr.strip().splitlines()
    assert "building ratings_ml_training failed: the disk holding " + str(full_disk / "lake" / DATASET) in line
    assert "is full (No space left on device); nothing was half-written: free space there, or point" in line
    store = ObjectStore.from_url(lake_url)
    written = lake.list_partition_keys(store, DATASET, "customerNumber")
    assert 0 < len(written) < 122, "the disk filled up part of the way through"
    assert lake.read_partitions(store, DATASET, "customerNumber").num_rows > 0, "every file written is whole"
    assert not [o.key for o in store.list() if ".tmp-" in o.key], "no writer's temporary left behind"


def test_events_into_a_stream_on_a_full_disk_are_written_whole_or_not_at_all(full_disk, tmp_path, seeded_sqlite_template):
    from recsys_platform.streaming.stream import LocalStream

    source = tmp_path / "classicmodels.db"
    source.write_bytes(seeded_sqlite_template.read_bytes())
    (full_disk / "filler").write_bytes(b"\0" * 700 * 1024)  # room for a batch of 500 events or two, not ten
    home = full_disk / "home"
    proc = _cli(home, "produce-events", "--count", "5000", RECSYS_SOURCE_URL=f"sqlite:///{source}")
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    (line,) = proc.stderr.strip().splitlines()
    assert f"the disk holding {home / 'stream' / 'activity.jsonl'} is full" in line
    records = LocalStream(home / "stream", "activity").read({}, limit=10_000)
    assert records and len(records) % 500 == 0, "whole batches of 500 only, the last one cut off again"
    assert [int(r.sequence_number) for r in records] == list(range(1, len(records) + 1))
