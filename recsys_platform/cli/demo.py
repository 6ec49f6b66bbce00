"""`recsys-platform demo`: the whole platform end to end on the configured profile."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg

from recsys_platform import wiring
from recsys_platform.batch.contract import DATASET, Layout
from recsys_platform.batch.seed import is_seeded, seed
from recsys_platform.batch.source import SourceDatabase
from recsys_platform.definitions import build_definitions
from recsys_platform.defs.batch import OBSERVE_JOB
from recsys_platform.defs.batch.assets import TRAINING_KEY
from recsys_platform.defs.batch.partitions import CUSTOMERS
from recsys_platform.errors import RunFailedError
from recsys_platform.settings import Settings


@dataclass
class DemoReport:
    lines: list[str] = field(default_factory=list)
    failed_checks: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def add(self, text: str) -> None:
        self.lines.append(text)
        print(text, flush=True)


def instance_for(settings: Settings) -> dg.DagsterInstance:
    """A persistent Dagster instance under RECSYS_HOME, so `dagster dev` shows the demo's runs."""
    home = Path(settings.home) / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text("telemetry:\n  enabled: false\n")
    return dg.DagsterInstance.from_config(str(home))


def _observe(defs: dg.Definitions, instance: dg.DagsterInstance) -> None:
    """Record the source's per-partition data versions (the batch domain's observation job)."""
    result = defs.resolve_job_def(OBSERVE_JOB).execute_in_process(instance=instance, raise_on_error=False)
    if not result.success:
        raise RunFailedError("observing the source failed; see the run in the Dagster UI")


def run_batch(settings: Settings, defs: dg.Definitions, instance: dg.DagsterInstance, report: DemoReport) -> None:
    layout = Layout(settings.hash_buckets)
    db = SourceDatabase(settings.source_url)
    t0 = time.perf_counter()
    if not is_seeded(db.engine):
        os.makedirs(settings.home, exist_ok=True)
        summary = seed(db.engine)
        report.add(f"seeded {db.masked_url}: {summary}")
    else:
        report.add(f"source {db.masked_url} already seeded")
    customers = db.customer_numbers()
    db.dispose()
    keys = layout.partition_keys(customers)
    if not layout.buckets:
        known = set(instance.get_dynamic_partitions(CUSTOMERS.name))
        instance.add_dynamic_partitions(CUSTOMERS.name, [k for k in keys if k not in known])
    _observe(defs, instance)
    report.timings["seed_and_observe_s"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    job = defs.resolve_job_def("ratings_ml_training_job")
    result = job.execute_in_process(
        instance=instance, raise_on_error=False,
        tags={"dagster/asset_partition_range_start": keys[0],
              "dagster/asset_partition_range_end": keys[-1]})
    report.timings["ratings_ml_training_s"] = time.perf_counter() - t1
    _failed_checks(result, report)
    if not result.success:
        raise RunFailedError(f"building {DATASET} failed: {_failure_reason(result)}")
    materialization = result.asset_materializations_for_node(TRAINING_KEY.path[-1])[0]
    rows = materialization.metadata["run_rows"].value
    location = materialization.metadata["dataset_location"].value
    report.add(f"{DATASET}: {rows:,} rows in {len(keys):,} partitions ({layout.column}=...) at {location}")


def _failed_checks(result, report: DemoReport) -> None:
    for evaluation in result.get_asset_check_evaluations():
        if not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR:
            report.failed_checks.append(f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}")


def _failure_reason(result) -> str:
    failure = next((e for e in result.all_events if e.is_step_failure), None)
    return failure.step_failure_data.error.message.strip() if failure else "see the run's logs"


def run_model_and_vectors(settings: Settings, defs: dg.Definitions, instance: dg.DagsterInstance,
                          report: DemoReport) -> None:
    t0 = time.perf_counter()
    result = defs.resolve_job_def("model_and_vectors_job").execute_in_process(instance=instance, raise_on_error=False)
    report.timings["model_and_vectors_s"] = time.perf_counter() - t0
    _failed_checks(result, report)
    if not result.success:
        raise RunFailedError(f"training or loading the vectors failed: {_failure_reason(result)}")
    model = result.asset_materializations_for_node("recommender_model")[0].metadata
    metrics = model["metrics"].value
    report.add(f"recommender_model: version {model['model_version'].value}, held-out RMSE {metrics['rmse']} "
               f"(bias baseline {metrics['rmse_bias']}), NDCG@10 {metrics['ndcg@10']} "
               f"(popularity {metrics['ndcg@10_popularity']}), artifacts at {settings.artifacts_url}")
    item = result.asset_materializations_for_node("embeddings")
    by_key = {m.asset_key.to_user_string(): m.metadata for m in item}
    item, user = by_key["item_emb"], by_key["user_emb"]
    report.add(f"pgvector: item_emb {item['dagster/row_count'].value} rows, user_emb {user['dagster/row_count'].value} "
               f"rows, active version {item['active_version'].value}, HNSW recall@10 {item['hnsw_recall@10'].value:.3f}")


def run_streaming(settings: Settings, report: DemoReport, events: int = 500) -> None:
    """Activity events into the stream, the delivery runtime until drained, a sample printed."""
    import json

    from recsys_platform.streaming.producer import load_catalog, sessions

    t0 = time.perf_counter()
    db = SourceDatabase(settings.source_url)
    customers, products = load_catalog(db.engine)
    db.dispose()
    runtime = wiring.delivery_runtime(settings, wiring.inference_service(settings), log=lambda *_: None)
    produced = list(sessions(customers, products, events, malformed_share=0.05, seed=int(time.time())))
    runtime.stream.put_records([(k, d) for k, d, _ in produced])
    counters = runtime.run(once=True)
    report.timings["streaming_s"] = time.perf_counter() - t0
    report.add(f"stream: {events} events -> delivered {counters.delivered}, failed {counters.failed}, "
               f"dropped {counters.dropped} (balanced: {counters.balanced}) into {settings.recommendations_url}")
    if counters.reasons:
        report.add("  failure reasons: " + "; ".join(f"{r} x{n}" for r, n in counters.reasons.most_common()))
    if not counters.balanced:
        report.failed_checks.append("delivery:records_in_equals_delivered_dropped_failed")
    known = {int(c["customerNumber"]) for c in customers}
    samples: dict[str, dict] = {}
    for obj in reversed(runtime.store.list()):
        if obj.key.startswith("processing-failed/") or len(samples) == 2:
            continue
        for line in runtime.store.read_bytes(obj.key).decode().splitlines():
            rec = json.loads(line)
            kind = "known customer" if rec["customer_number"] in known else "new customer"
            samples.setdefault(kind, rec)
    for kind, rec in sorted(samples.items()):
        report.add(f"  {kind} {rec['customer_number']} ({rec['city']}, {rec['country']}), cart "
                   f"{[b['product_code'] for b in rec['browse_history']]}: recommended "
                   f"{[i['id'] for i in rec['recommended_items']]}, similar to "
                   f"{rec['similar_items']['product_code']}: {[i['id'] for i in rec['similar_items']['similar_items'][:3]]}")


def run_ingestion(defs: dg.Definitions, instance: dg.DagsterInstance, report: DemoReport) -> None:
    """One tick of `recommendations_sensor`, then the hourly partitions it requested."""
    sensor = defs.resolve_sensor_def("recommendations_sensor")
    # The demo evaluates a fresh tick (no cursor): every hour in the look-back window with objects.
    with dg.build_sensor_context(instance=instance, definitions=defs,
                                 resources={"recommendations_store": defs.resources["recommendations_store"]}) as ctx:
        result = sensor.evaluate_tick(ctx)
    requests = result.run_requests or []
    t0 = time.perf_counter()
    job = defs.resolve_job_def("recommendations_job")
    for request in requests:
        run = job.execute_in_process(instance=instance, partition_key=request.partition_key, raise_on_error=False,
                                     tags={**request.tags, "dagster/run_key": request.run_key})
        _failed_checks(run, report)
        if not run.success:
            raise RunFailedError(f"ingesting hour {request.partition_key} failed: {_failure_reason(run)}")
        meta = run.asset_materializations_for_node("recommendations")[0].metadata
        report.add(f"recommendations hour {request.partition_key}: {meta['dagster/row_count'].value} rows, "
                   f"{meta['failed'].value} failed, {meta['users'].value} users, failure rate "
                   f"{meta['failure_rate'].value:.1%} -> {meta['location'].value}")
    report.timings["ingestion_s"] = time.perf_counter() - t0
    if not requests:
        report.add(f"recommendations_sensor: {result.skip_message}")


def run_demo(settings: Settings) -> DemoReport:
    report = DemoReport()
    report.add(f"recsys-platform demo: RECSYS_HOME={settings.home}")
    started = time.perf_counter()
    instance = instance_for(settings)
    defs = build_definitions(settings)  # one Definitions (and resources) for every step
    run_batch(settings, defs, instance, report)
    run_model_and_vectors(settings, defs, instance, report)
    run_streaming(settings, report)
    run_ingestion(defs, instance, report)
    report.timings["total_s"] = time.perf_counter() - started
    report.add("timings: " + ", ".join(f"{k}={v:.1f}" for k, v in report.timings.items()))
    if report.failed_checks:
        report.add("FAILED checks: " + ", ".join(report.failed_checks))
    else:
        report.add("all checks passed")
    report.add(f"open the UI over the same state: DAGSTER_HOME={Path(settings.home) / 'dagster_home'} dagster dev")
    return report
