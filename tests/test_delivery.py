"""The local delivery runtime end to end: stream -> transformation Lambda -> recommendations bucket;
and the stream's own guarantees: numbering that never restarts, whatever a record's length or a
killed writer leaves, a reader that stops rather than skip, Kinesis's limits on every stream."""

import base64
import json
import uuid

import pytest

from recsys_platform.batch.seed import generate
from recsys_platform.storage.object_store import TEMPORARY_PREFIX, ObjectStore, is_hidden
from recsys_platform.streaming.delivery import BufferHints, DeliveryRuntime
from recsys_platform.streaming.producer import MALFORMED_KINDS, sessions
from recsys_platform.streaming.stream import (
    MAX_KEY_CHARS,
    MAX_RECORD_BYTES,
    KinesisStream,
    LocalStream,
    StreamError,
)


@pytest.fixture(scope="module")
def people():
    data = generate(1)
    customers = [{k: c[k] for k in ("customerNumber", "city", "country", "creditLimit")} for c in data["customers"]]
    return customers, sorted(p["productCode"] for p in data["products"])


def _produce(stream, people, count, malformed=0.3, seed=1):
    produced = list(sessions(*people, count, malformed, seed=seed))
    stream.put_records([(k, d) for k, d, _ in produced])
    return produced


def _outputs(store):
    """Every record in the store's objects, as a reader sees them: hidden names (a killed writer's
    temporary) are skipped."""
    ok, failed = [], []
    for obj in store.list():
        if is_hidden(obj.key):
            continue
        lines = store.read_bytes(obj.key).decode().splitlines()
        (failed if obj.key.startswith("processing-failed/") else ok).extend(json.loads(x) for x in lines)
    return ok, failed


def _runtime(stream, store, tmp_path, transform, **kw):
    kw.setdefault("retry_duration_s", 0.0)
    return DeliveryRuntime(stream, transform, store, tmp_path / "state", hints=kw.pop("hints", BufferHints(records=50)),
                           first_backoff_s=0.01, log=lambda *_: None, **kw)


def test_every_record_is_delivered_dropped_or_failed_with_its_reason(catalog, people, tmp_path):
    stream = LocalStream(tmp_path / "stream", "activity")
    produced = _produce(stream, people, 300)
    store = ObjectStore.from_url((tmp_path / "recs").as_uri())
    counters = _runtime(stream, store, tmp_path, catalog["transform"]).run(once=True)
    kinds = [k for _, _, k in produced]
    assert counters.records_in == 300 and counters.balanced
    assert counters.failed == sum(k != "ok" for k in kinds) > 0
    assert set(MALFORMED_KINDS) <= set(kinds), "the test covers every malformed kind"
    ok, failed = _outputs(store)
    assert len(ok) == counters.delivered and len(failed) == counters.failed
    sent_ok = sorted(json.loads(d)["session_id"] for _, d, k in produced if k == "ok")
    assert sorted(r["session_id"] for r in ok) == sent_ok, "each good session exactly once"
    assert all(len(r["recommended_items"]) == 5 and r["model_version"] for r in ok)
    assert {f["errorCode"] for f in failed} == {"Lambda.ProcessingFailed"}
    assert all(f["errorMessage"] and f["rawData"] for f in failed)
    keys = [o.key for o in store.list()]
    assert all(k.split("/")[0].isdigit() or k.startswith("processing-failed/") for k in keys)
    assert any(k.split("/")[-1].startswith("activity-1-") for k in keys)


class Crash(BaseException):
    """A kill, mid-batch (BaseException: nothing in the runtime may swallow it)."""


def test_a_crash_mid_batch_neither_loses_nor_duplicates(catalog, people, tmp_path):
    stream = LocalStream(tmp_path / "stream", "activity")
    produced = _produce(stream, people, 230, malformed=0.1)
    store = ObjectStore.from_url((tmp_path / "recs").as_uri())
    calls = {"n": 0}

    def dies_on_third_batch(request):
        calls["n"] += 1
        response = catalog["transform"](request)
        if calls["n"] == 3:
            raise Crash()  # after the work, before anything is written or committed
        return response

    with pytest.raises(Crash):
        _runtime(stream, store, tmp_path, transform=dies_on_third_batch).run(once=True)
    runtime = _runtime(stream, store, tmp_path, catalog["transform"])  # a restart, same state folder
    original_commit = runtime.state.commit

    def dies_after_writing(checkpoint):  # the second crash: outputs written, checkpoint not yet
        runtime.state.commit = original_commit
        raise Crash()

    runtime.state.commit = dies_after_writing
    with pytest.raises(Crash):
        runtime.run(once=True)
    _runtime(stream, store, tmp_path, catalog["transform"]).run(once=True)  # the final restart drains the stream
    ok, failed = _outputs(store)
    sent = [json.loads(d)["session_id"] for _, d, k in produced if k == "ok"]
    assert sorted(r["session_id"] for r in ok) == sorted(sent), "nothing lost, nothing twice"
    assert len(failed) == sum(k != "ok" for _, _, k in produced)


def test_a_kill_between_the_checkpoint_and_the_intents_removal_neither_fails_nor_duplicates(catalog, people, tmp_path):
    """The window `deliver` met under SIGKILL in CI: the batch's checkpoint written, its intent
    not yet removed; the restart used to stop with "cannot redo the interrupted batch"."""
    stream = LocalStream(tmp_path / "stream", "activity")
    produced = _produce(stream, people, 230, malformed=0.1)
    store = ObjectStore.from_url((tmp_path / "recs").as_uri())
    runtime = _runtime(stream, store, tmp_path, catalog["transform"])
    batches = {"n": 0}

    def dies_before_removing_the_intent():
        batches["n"] += 1
        if batches["n"] == 2:
            raise Crash()

    runtime.state.discard_intent = dies_before_removing_the_intent
    with pytest.raises(Crash):
        runtime.run(once=True)
    assert runtime.state.intent() is not None, "the window: checkpoint moved, intent still there"
    _runtime(stream, store, tmp_path, catalog["transform"]).run(once=True)
    ok, failed = _outputs(store)
    sent = [json.loads(d)["session_id"] for _, d, k in produced if k == "ok"]
    assert sorted(r["session_id"] for r in ok) == sorted(sent), "nothing lost, nothing twice"
    assert len(failed) == sum(k != "ok" for _, _, k in produced)


def test_a_failing_handler_retries_then_fails_the_batch_with_the_error(people, tmp_path):
    stream = LocalStream(tmp_path / "stream", "activity")
    _produce(stream, people, 20, malformed=0)
    store = ObjectStore.from_url((tmp_path / "recs").as_uri())
    attempts = []

    def broken(request):
        attempts.append(1)
        raise ConnectionError("vector database unreachable")

    counters = _runtime(stream, store, tmp_path, transform=broken, retry_duration_s=0.1).run(once=True)
    assert len(attempts) >= 3 and counters.retries == len(attempts) - 1, "retried with back-off for 0.1 s"
    assert counters.failed == 20 and counters.balanced
    _, failed = _outputs(store)
    assert {f["errorCode"] for f in failed} == {"Lambda.InvokeFailed"}
    assert "vector database unreachable" in failed[0]["errorMessage"]
    assert failed[0]["attemptsMade"] == len(attempts)


def test_a_contract_breaking_handler_is_treated_as_a_failed_batch(people, tmp_path):
    stream = LocalStream(tmp_path / "stream", "activity")
    _produce(stream, people, 5, malformed=0)
    store = ObjectStore.from_url((tmp_path / "recs").as_uri())

    def forgets_a_record(request):
        return {"records": [{"recordId": r["recordId"], "result": "Ok", "data": r["data"]} for r in request["records"][1:]]}

    counters = _runtime(stream, store, tmp_path, transform=forgets_a_record).run(once=True)
    assert counters.failed == 5 and counters.balanced
    assert "not answered" in _outputs(store)[1][0]["errorMessage"]


@pytest.mark.s3
def test_kinesis_to_s3_through_a_compatible_endpoint(catalog, people, tmp_path, s3_endpoint, s3_bucket):
    import boto3

    name = f"events-{uuid.uuid4().hex[:8]}"
    kinesis = boto3.client("kinesis", endpoint_url=s3_endpoint)
    kinesis.create_stream(StreamName=name, ShardCount=2)
    kinesis.get_waiter("stream_exists").wait(StreamName=name)
    stream = KinesisStream(name, endpoint_url=s3_endpoint)
    produced = _produce(stream, people, 120, malformed=0.1)
    store = ObjectStore.from_url(f"s3://{s3_bucket}/recommendations", endpoint_url=s3_endpoint)
    counters = _runtime(stream, store, tmp_path, catalog["transform"]).run(once=True)
    assert counters.records_in == 120 and counters.balanced
    ok, failed = _outputs(store)
    assert sorted(r["session_id"] for r in ok) == sorted(json.loads(d)["session_id"] for _, d, k in produced if k == "ok")
    # A restarted reader resumes after the checkpoint on every shard: nothing is read twice.
    _produce(stream, people, 10, malformed=0, seed=2)
    again = _runtime(KinesisStream(name, endpoint_url=s3_endpoint), store, tmp_path, catalog["transform"]).run(once=True)
    assert again.records_in == 10
    assert len(stream.shards()) == 2


def test_sigkill_of_the_deliver_process_and_a_restart_lose_nothing(catalog, people, tmp_path):
    """A real `recsys-platform deliver` process, killed with SIGKILL while it works, then restarted."""
    import os
    import signal
    import subprocess
    import sys
    import time

    home = tmp_path / "home"
    produced = _produce(LocalStream(home / "stream", "activity"), people, 3000, malformed=0.05)
    recs = ObjectStore.from_url((tmp_path / "recs").as_uri())
    env = {**os.environ, "RECSYS_HOME": str(home), "RECSYS_ARTIFACTS_URL": catalog["store"].url,
           "RECSYS_VECTOR_DSN": catalog["vectors"].dsn, "RECSYS_RECOMMENDATIONS_URL": recs.url}
    command = [sys.executable, "-m", "recsys_platform.cli", "deliver", "--buffer-records", "20"]
    proc = subprocess.Popen([*command, "--max-seconds", "120"], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while len(recs.list()) < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    written_before_restart = len(recs.list())
    assert written_before_restart >= 10, "the process was killed while it was delivering"
    # what a kill mid-write leaves, planted so the run always has one (CI's run once did by chance)
    recs.write_bytes(f"{recs.list()[0].key.rsplit('/', 1)[0]}/{TEMPORARY_PREFIX}killed", b'{"session_id": "s')
    done = subprocess.run([*command, "--once"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    ok, failed = _outputs(recs)
    left = [o.key for o in recs.list() if is_hidden(o.key)]
    assert all(k.rsplit("/", 1)[-1].startswith(TEMPORARY_PREFIX) for k in left), left  # at most the killed writes'
    sent = [json.loads(d)["session_id"] for _, d, k in produced if k == "ok"]
    assert sorted(r["session_id"] for r in ok) == sorted(sent), "every good session exactly once"
    assert len(failed) == sum(k != "ok" for _, _, k in produced)


def test_a_10_second_database_outage_loses_nothing_and_fails_nothing(catalog, people, tmp_path):
    """PostgreSQL stopped for 10 s while batches flow: Firehose-like retries (60 s by default) carry
    every batch over the outage; before, retries covered 1.5 s and 60 of 300 events failed."""
    import subprocess
    import sys
    import tempfile
    import threading
    import time
    from pathlib import Path

    from recsys_platform import wiring
    from recsys_platform.ml import artifacts
    from recsys_platform.serving.service import InferenceService, ModelCache
    from recsys_platform.vectors.embedded import embedded_dsn, stop_embedded
    from recsys_platform.vectors.store import VectorStore
    from tests.conftest import load_serving_catalog

    pgdata = Path(tempfile.mkdtemp(prefix="recsys-outage-")) / "pgdata"  # outside basetemp (see conftest)
    vectors = VectorStore(embedded_dsn(pgdata), connect_timeout=2)
    store = catalog["store"]
    version, manifest, emb = artifacts.load_embeddings(store, catalog["version"])
    vectors.load_version(version, emb["item"], emb["user"], manifest["dim"])
    vectors.activate(version)
    load_serving_catalog(vectors, catalog["frame"])
    service = InferenceService(ModelCache(store, vectors, check_seconds=0.2), vectors)
    transform = wiring.in_process_transformation(service)
    outage = {}

    def restart():
        time.sleep(10)
        subprocess.run([sys.executable, "-c", "import sys; from recsys_platform.vectors.embedded import embedded_dsn;"
                        " embedded_dsn(sys.argv[1])", str(pgdata)], check=True, capture_output=True, timeout=60)
        outage["back"] = time.monotonic()

    def transform_with_an_outage(request):
        outage["calls"] = outage.get("calls", 0) + 1
        if outage["calls"] == 3:  # the third batch meets a stopped database
            stop_embedded(pgdata)
            outage["down"] = time.monotonic()
            threading.Thread(target=restart, daemon=True).start()
        return transform(request)

    stream = LocalStream(tmp_path / "stream", "activity")
    _produce(stream, people, 300, malformed=0)
    recs = ObjectStore.from_url((tmp_path / "recs").as_uri())
    try:
        counters = _runtime(stream, recs, tmp_path, transform_with_an_outage, retry_duration_s=60.0,
                            hints=BufferHints(records=30)).run(once=True)
    finally:
        vectors.close()
        stop_embedded(pgdata)
    assert outage["back"] - outage["down"] >= 10, "the database was down for 10 s"
    assert counters.retries > 0 and counters.failed == 0 and counters.delivered == 300 and counters.balanced
    ok, failed = _outputs(recs)
    assert len(ok) == 300 and not failed


def test_one_delivery_runtime_per_stream_and_a_dead_holder_frees_it(people, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    from recsys_platform.streaming.delivery import DeliveryBusy, StreamLock

    stream = LocalStream(tmp_path / "stream", "activity")
    _produce(stream, people, 5, malformed=0)
    store = ObjectStore.from_url((tmp_path / "recs").as_uri())
    first = _runtime(stream, store, tmp_path, transform=lambda r: {"records": []})
    second = _runtime(stream, store, tmp_path, transform=lambda r: {"records": []})
    busy = f"another deliver is running on stream 'activity' \\(pid {os.getpid()}"
    with first.lock, pytest.raises(DeliveryBusy, match=busy):
        second.run(once=True)
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from recsys_platform.streaming.delivery import "
                               "StreamLock; lock = StreamLock(sys.argv[1], 'activity').__enter__(); print('held', "
                               "flush=True); time.sleep(600)", str(tmp_path / "state")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(DeliveryBusy):
        StreamLock(tmp_path / "state", "activity").__enter__()
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    with StreamLock(tmp_path / "state", "activity"):
        pass  # the kernel released the dead holder's lock


# -- the stream itself ----------------------------------------------------------------------------
def _numbers(stream: LocalStream) -> list[int]:
    return [json.loads(line)["seq"] for line in stream.path.read_bytes().splitlines() if line.startswith(b'{"seq"')
            and line.endswith(b"}")]


def test_a_record_longer_than_any_tail_keeps_the_numbering_and_deliver_loses_nothing(catalog, people, tmp_path):
    """Once, a 70 KB record restarted the numbering at 1 and the next ~10,000 events vanished
    while deliver reported a balanced run."""
    stream = LocalStream(tmp_path / "stream", "activity")
    store = ObjectStore.from_url((tmp_path / "recs").as_uri())
    _produce(stream, people, 30, malformed=0)
    first = _runtime(stream, store, tmp_path, catalog["transform"]).run(once=True)
    assert first.records_in == 30 and first.delivered == 30
    long_event = json.dumps({"session_id": "long", "customer_number": 103, "browse": [],
                             "note": "x" * 200_000}).encode()  # a line of ~270 KB, base64 included
    stream.put_records([("long", long_event)])
    later = _produce(stream, people, 200, malformed=0.2, seed=7)
    assert _numbers(stream) == list(range(1, 232)), "numbers rise by one, across the long record"
    second = _runtime(stream, store, tmp_path, catalog["transform"]).run(once=True)
    assert second.records_in == 201 and second.balanced
    ok, failed = _outputs(store)
    assert {r["session_id"] for r in ok} >= {json.loads(d)["session_id"] for _, d, k in later if k == "ok"}
    assert sum(k != "ok" for _, _, k in later) + 1 == second.failed, "the long record is failed with its reason"
    (kept,) = [f for f in failed if base64.b64decode(f["rawData"]) == long_event]
    assert kept["errorMessage"], "kept whole, with the reason"


def test_a_torn_line_from_a_killed_writer_neither_renumbers_nor_swallows_a_record(tmp_path):
    stream = LocalStream(tmp_path, "activity")
    stream.put_records([("a", b"1"), ("b", b"2")])
    with open(stream.path, "ab") as f:
        f.write(b'{"seq": 3, "pk": "c", "ts": "2026-12-0')  # killed mid-write: never acknowledged
    stream.put_records([("d", b"4")])
    records = stream.read({})
    assert [(r.sequence_number, r.partition_key, r.data) for r in records] == [("1", "a", b"1"), ("2", "b", b"2"),
                                                                                ("3", "d", b"4")]


@pytest.mark.parametrize("from_offset", [True, False])
def test_numbers_that_go_backwards_stop_the_reader_naming_the_place(tmp_path, from_offset):
    stream = LocalStream(tmp_path, "activity")
    stream.put_records([("a", b"1"), ("b", b"2"), ("c", b"3")])
    delivered = stream.read({})[:2]
    checkpoint = stream.checkpoint_after({}, delivered) if from_offset else {"shardId-000000000000": "2"}
    at = stream.path.stat().st_size
    with open(stream.path, "ab") as f:  # what the old tail reader wrote after a long record
        f.write(json.dumps({"seq": 1, "pk": "d", "ts": "2026-12-03T00:00:00+00:00", "data": "NA=="}).encode() + b"\n")
    with pytest.raises(StreamError, match=rf"goes backwards at byte {at:,}: sequence 1 after 3"):
        stream.read(checkpoint)


def test_records_kinesis_would_refuse_are_refused_by_every_stream_before_any_is_written(tmp_path, s3_endpoint):
    import boto3

    name = f"limits-{uuid.uuid4().hex[:8]}"
    kinesis = boto3.client("kinesis", endpoint_url=s3_endpoint)
    kinesis.create_stream(StreamName=name, ShardCount=1)
    kinesis.get_waiter("stream_exists").wait(StreamName=name)
    just_fits = ("k", b"x" * (MAX_RECORD_BYTES - 1))
    for stream in (LocalStream(tmp_path, "activity"), KinesisStream(name, endpoint_url=s3_endpoint)):
        with pytest.raises(StreamError, match=r"1 of 2 record\(s\) refused, none of the batch written: record 1 "
                                              r"\(key 'big'\): 1,048,579 bytes, over the 1,048,576-byte limit"):
            stream.put_records([("ok", b"{}"), ("big", b"x" * MAX_RECORD_BYTES)])
        with pytest.raises(StreamError, match=f"a partition key of {MAX_KEY_CHARS + 1} characters"):
            stream.put_records([("k" * (MAX_KEY_CHARS + 1), b"{}")])
        assert stream.read({}) == [], "nothing of a refused batch is written"
        assert stream.put_records([just_fits]) == 1, "the limit itself is accepted (Kinesis: data + key <= 1 MiB)"
        assert [len(r.data) for r in stream.read({})] == [MAX_RECORD_BYTES - 1]


def _outage(request):
    raise ConnectionError("the vector database is down")


def test_redrive_sends_failed_records_again_exactly_once_even_after_a_kill(catalog, people, tmp_path):
    """An outage longer than the retries fails a whole batch with its raw data; `redrive`, once the
    database is back, delivers each record once: a kill between writing the outputs and removing
    the failed object is redone into the same keys, and a second redrive finds nothing."""
    stream = LocalStream(tmp_path / "stream", "activity")
    produced = _produce(stream, people, 120, malformed=0.1, seed=11)
    store = ObjectStore.from_url((tmp_path / "recs").as_uri())
    down = _runtime(stream, store, tmp_path, _outage).run(once=True)
    assert down.failed == 120 and down.delivered == 0
    failed_objects = [o.key for o in store.list("processing-failed")]
    assert len(failed_objects) == 3  # batches of 50

    class Killed(BaseException):
        pass

    deletes = {"n": 0}
    real_delete = store.delete

    def killed_on_first_delete(key):
        deletes["n"] += 1
        if deletes["n"] == 1:
            raise Killed()  # outputs written, the failed object still there
        real_delete(key)

    store.delete = killed_on_first_delete
    with pytest.raises(Killed):
        _runtime(stream, store, tmp_path, catalog["transform"]).redrive()
    store.delete = real_delete
    assert any(o.key.rsplit("/", 1)[1].startswith(".redrive-") for o in store.list("processing-failed"))

    again = _runtime(stream, store, tmp_path, catalog["transform"]).redrive()
    good = sorted(json.loads(d)["session_id"] for _, d, k in produced if k == "ok")
    ok, failed = _outputs(store)
    assert sorted(r["session_id"] for r in ok) == good, "each good record delivered exactly once"
    assert len(failed) == 120 - len(good) and {f["errorCode"] for f in failed} == {"Lambda.ProcessingFailed"}
    assert again.records_in == 120 and again.delivered == len(good) and again.balanced
    assert not set(failed_objects) & {o.key for o in store.list()}, "the redriven objects are gone"
    assert not [o for o in store.list() if ".redrive-" in o.key], "and so are their plans"

    nothing_new = _runtime(stream, store, tmp_path, catalog["transform"]).redrive()
    assert nothing_new.delivered == 0 and nothing_new.failed == len(failed), "malformed records fail again"
    assert sorted(r["session_id"] for r in _outputs(store)[0]) == good


def test_redrive_leaves_an_object_that_is_not_error_records_and_counts_it(catalog, tmp_path):
    stream = LocalStream(tmp_path / "stream", "activity")
    store = ObjectStore.from_url((tmp_path / "recs").as_uri())
    store.write_bytes("processing-failed/2026/12/01/00/activity-1-junk", b"\x00\xffnot error records")
    counters = _runtime(stream, store, tmp_path, catalog["transform"]).redrive()
    assert counters.reasons["unreadable processing-failed object"] == 1 and counters.records_in == 0
    assert store.exists("processing-failed/2026/12/01/00/activity-1-junk")


def test_deliver_exits_3_naming_redrive_when_the_database_is_out_and_redrive_then_delivers(catalog, people,
                                                                                            tmp_path):
    """The CLI: records the transformation could not take make `deliver` exit 3 with one line naming
    `redrive`; records refused for their content alone do not (redriving them cannot help)."""
    import os
    import subprocess
    import sys

    home = tmp_path / "home"
    produced = _produce(LocalStream(home / "stream", "activity"), people, 60, malformed=0.1, seed=12)
    recs = ObjectStore.from_url((tmp_path / "recs").as_uri())
    env = {**os.environ, "RECSYS_HOME": str(home), "RECSYS_ARTIFACTS_URL": catalog["store"].url,
           "RECSYS_RECOMMENDATIONS_URL": recs.url}

    def cli(*args, dsn=catalog["vectors"].dsn):
        return subprocess.run([sys.executable, "-m", "recsys_platform.cli", *args], capture_output=True, text=True,
                              timeout=300, env={**env, "RECSYS_VECTOR_DSN": dsn})

    out = cli("deliver", "--once", "--retry-seconds", "0",
              dsn="postgresql://nobody@127.0.0.1:1/recsys?connect_timeout=2")  # nothing listens on port 1
    assert out.returncode == 3, out.stdout[-1500:] + out.stderr[-1500:]
    line = out.stderr.strip().splitlines()[-1]
    assert "60 record(s) failed because the transformation could not run" in line and "redrive" in line
    again = cli("redrive")
    assert again.returncode == 0, again.stdout[-1500:] + again.stderr[-1500:]
    ok, failed = _outputs(recs)
    assert sorted(r["session_id"] for r in ok) == sorted(json.loads(d)["session_id"] for _, d, k in produced
                                                         if k == "ok")
    assert len(failed) == sum(k != "ok" for _, _, k in produced)
    assert {f["errorCode"] for f in failed} == {"Lambda.ProcessingFailed"}, "refused for their content, once each"


def test_a_crashed_or_stale_embedded_server_is_started_by_whoever_needs_it(catalog, tmp_path):
    """kill -9 of the embedded postmaster: the next request starts it again (before, `serve`
    answered 503 until a person ran another command). A `postmaster.pid` whose PID now belongs to
    another process (after an unclean stop) is recognised as stale; `stop` then says "not running"
    instead of passing pg_ctl's error on."""
    import os
    import shutil
    import signal
    import subprocess
    import tempfile
    import time
    from pathlib import Path

    from recsys_platform import wiring
    from recsys_platform.ml import artifacts
    from recsys_platform.serving.messages import RecommendationRequest
    from recsys_platform.serving.service import InferenceService, ModelCache
    from recsys_platform.vectors.embedded import PID_FILE, stop_embedded
    from tests.conftest import load_serving_catalog

    pgdata = Path(tempfile.mkdtemp(prefix="recsys-revive-")) / "pgdata"  # outside basetemp (see conftest)
    vectors = wiring.vector_store("", "", "", "recsys", str(pgdata), connect_timeout=2)  # as serve builds it
    sleeper = subprocess.Popen(["sleep", "120"])  # a live process that is not PostgreSQL
    try:
        version, manifest, emb = artifacts.load_embeddings(catalog["store"], catalog["version"])
        vectors.load_version(version, emb["item"], emb["user"], manifest["dim"])
        vectors.activate(version)
        load_serving_catalog(vectors, catalog["frame"])
        service = InferenceService(ModelCache(catalog["store"], vectors), vectors)
        ask = [RecommendationRequest("s1", int(catalog["customers"][0]), None, frozenset([catalog["products"][0]]),
                                     catalog["products"][0])]

        def answered() -> bool:
            return len(service.recommend(ask, k=5).results[0].recommended) == 5

        def kill_postmaster() -> int:
            pid = int((pgdata / PID_FILE).read_text().split("\n", 1)[0])
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
                time.sleep(0.05)
            return pid

        assert answered()
        crashed = kill_postmaster()
        assert answered(), "the request that found the server down started it"
        assert int((pgdata / PID_FILE).read_text().split("\n", 1)[0]) != crashed

        kill_postmaster()  # an unclean stop whose PID the system then gives to another process
        for lock in [pgdata / PID_FILE, *pgdata.glob(".s.PGSQL.*.lock")]:
            lines = lock.read_text().split("\n")
            lock.write_text("\n".join([str(sleeper.pid), *lines[1:]]))
        assert answered(), "a PID file naming another process does not stop the server starting"

        kill_postmaster()
        (pgdata / PID_FILE).write_text("\n".join([str(sleeper.pid), *(pgdata / PID_FILE).read_text().split("\n")[1:]]))
        assert stop_embedded(pgdata) is False, "not running: the stale file is no pg_ctl error"
        assert not (pgdata / PID_FILE).exists()
        assert sleeper.poll() is None, "the process that holds the PID is left alone"
    finally:
        sleeper.kill()
        vectors.close()
        stop_embedded(pgdata)
        shutil.rmtree(pgdata.parent, ignore_errors=True)


def test_produce_events_replays_a_recorded_log_as_it_is(people, tmp_path, capsys):
    """`produce-events --from FILE`: every non-empty line into the stream, byte for byte, a malformed
    one too (the transformation judges it); a line Kinesis would refuse stops it with nothing sent."""
    from recsys_platform.cli import main

    produced = list(sessions(*people, 3, 0.0, seed=21))
    log = tmp_path / "recorded.jsonl"
    log.write_bytes(b"\n".join([produced[0][1], b"", produced[1][1], b'{"session_id": "cut', produced[2][1]]) + b"\n")
    home = tmp_path / "home"
    assert main(["--home", str(home), "produce-events", "--from", str(log)]) == 0
    assert "produced 4 events" in capsys.readouterr().out
    records = LocalStream(home / "stream", "activity").read({}, limit=10)
    assert [r.data for r in records] == [produced[0][1], produced[1][1], b'{"session_id": "cut', produced[2][1]]
    assert [r.partition_key for r in records] == [produced[0][0], produced[1][0], "line-4", produced[2][0]]

    big = tmp_path / "big.jsonl"
    big.write_bytes(produced[0][1] + b"\n" + b'{"pad": "' + b"x" * MAX_RECORD_BYTES + b'"}\n')
    assert main(["--home", str(home), "produce-events", "--from", str(big)]) == 2
    err = capsys.readouterr().err
    assert "1 line(s) over Kinesis's 1,048,576-byte record limit, nothing sent: line 2 (1,048,587 bytes)" in err
    assert len(LocalStream(home / "stream", "activity").read({}, limit=10)) == 4, "nothing of the big file sent"
    assert main(["--home", str(home), "produce-events", "--from", str(tmp_path / "missing.jsonl")]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main(["--home", str(home), "produce-events", "--count", "3", "--from", str(log)]) == 2
    assert "give --count N (synthetic sessions) or --from FILE" in capsys.readouterr().err
