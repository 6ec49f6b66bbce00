"""The local delivery runtime end to end: stream -> transformation Lambda -> recommendations bucket."""

import json

import pytest

from recsys_platform.batch.seed import generate
from recsys_platform.storage.object_store import ObjectStore
from recsys_platform.streaming.delivery import BufferHints, DeliveryRuntime
from recsys_platform.streaming.producer import MALFORMED_KINDS, sessions
from recsys_platform.streaming.stream import KinesisStream, LocalStream


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
    ok, failed = [], []
    for obj in store.list():
        lines = store.read_bytes(obj.key).decode().splitlines()
        (failed if obj.key.startswith("processing-failed/") else ok).extend(json.loads(x) for x in lines)
    return ok, failed


def _runtime(stream, store, tmp_path, transform, **kw):
    return DeliveryRuntime(stream, transform, store, tmp_path / "state", hints=kw.pop("hints", BufferHints(records=50)),
                           retry_seconds=0.01, log=lambda *_: None, **kw)


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


def test_a_failing_handler_retries_then_fails_the_batch_with_the_error(people, tmp_path):
    stream = LocalStream(tmp_path / "stream", "activity")
    _produce(stream, people, 20, malformed=0)
    store = ObjectStore.from_url((tmp_path / "recs").as_uri())
    attempts = []

    def broken(request):
        attempts.append(1)
        raise ConnectionError("vector database unreachable")

    counters = _runtime(stream, store, tmp_path, transform=broken, max_attempts=3).run(once=True)
    assert len(attempts) == 3 and counters.retries == 2
    assert counters.failed == 20 and counters.balanced
    _, failed = _outputs(store)
    assert {f["errorCode"] for f in failed} == {"Lambda.InvokeFailed"}
    assert "vector database unreachable" in failed[0]["errorMessage"] and failed[0]["attemptsMade"] == 3


def test_a_contract_breaking_handler_is_treated_as_a_failed_batch(people, tmp_path):
    stream = LocalStream(tmp_path / "stream", "activity")
    _produce(stream, people, 5, malformed=0)
    store = ObjectStore.from_url((tmp_path / "recs").as_uri())

    def forgets_a_record(request):
        return {"records": [{"recordId": r["recordId"], "result": "Ok", "data": r["data"]} for r in request["records"][1:]]}

    counters = _runtime(stream, store, tmp_path, transform=forgets_a_record, max_attempts=1).run(once=True)
    assert counters.failed == 5 and counters.balanced
    assert "not answered" in _outputs(store)[1][0]["errorMessage"]


@pytest.mark.s3
def test_kinesis_to_s3_through_a_compatible_endpoint(catalog, people, tmp_path, s3_endpoint, s3_bucket):
    import uuid

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
    done = subprocess.run([*command, "--once"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    ok, failed = _outputs(recs)
    sent = [json.loads(d)["session_id"] for _, d, k in produced if k == "ok"]
    assert sorted(r["session_id"] for r in ok) == sorted(sent), "every good session exactly once"
    assert len(failed) == sum(k != "ok" for _, _, k in produced)
