"""`recsys-platform demo`: the whole platform end to end on the configured profile.

The terminal shows one progress line per step and a short summary; Dagster's event log goes to
`$RECSYS_HOME/logs/dagster.log` (`--verbose` streams it too). The source is checked before
anything runs (reachable, the contract's tables and columns), and only the demo's own embedded
SQLite source is created and seeded on demand: any failure ends in one line naming what is
wrong and the fix.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
from rich.console import Console

from recsys_platform import wiring
from recsys_platform.assets.batch.assets import TRAINING_KEY
from recsys_platform.assets.batch.jobs import OBSERVE_JOB, TRAINING_JOB
from recsys_platform.assets.batch.partitions import CUSTOMERS
from recsys_platform.assets.feedback import INTERACTIONS_KEY, METRICS_KEY
from recsys_platform.assets.streaming.jobs import RECOMMENDATIONS_JOB
from recsys_platform.assets.vectors.jobs import MODEL_AND_VECTORS_JOB
from recsys_platform.batch.contract import DATASET, Layout
from recsys_platform.batch.seed import is_seeded, seed
from recsys_platform.batch.source import SourceDatabase
from recsys_platform.cli.runs import execute_as_location_run
from recsys_platform.definitions import build_definitions
from recsys_platform.errors import RunFailedError, SourceUnavailableError
from recsys_platform.feedback.metrics import K as ONLINE_K
from recsys_platform.settings import Settings
from recsys_platform.storage.locks import ProcessLock
from recsys_platform.storage.object_store import is_hidden
from recsys_platform.streaming import recommendations

# The demo's own source: collaborative mode, so that its learnable sessions (which follow that
# mode's latent tastes) are what the model learned from the ratings, and the online hit rate means something.
DEMO_SEED = {"scale": 1.0, "seed": 42, "mode": "collaborative"}


@dataclass
class DemoReport:
    lines: list[str] = field(default_factory=list)
    failed_checks: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    console: Console = field(default_factory=lambda: Console(highlight=False))

    pending: list[str] | None = None  # a running step's lines, shown under its ✓ line

    def add(self, text: str) -> None:
        self.lines.append(text)
        if self.pending is not None:
            self.pending.append(text)
        else:
            self.console.print(text, soft_wrap=True, markup=False)

    @contextmanager
    def step(self, name: str, timing: str):
        """A spinner while a step runs, then a ✓ line with its time and the step's own lines."""
        started = time.perf_counter()
        self.pending = []
        try:
            with self.console.status(f"{name} ..."):
                yield
        finally:
            lines, self.pending = self.pending, None
        self.timings[timing] = time.perf_counter() - started
        self.console.print(f"[green]✓[/green] {name} [dim]({self.timings[timing]:.1f} s)[/dim]")
        for text in lines:
            self.console.print(text, soft_wrap=True, markup=False)


class Demo:
    """The steps of the demo over one Definitions, one Dagster instance and one log file."""

    def __init__(self, settings: Settings, verbose: bool = False):
        self.settings = settings
        self.report = DemoReport()
        self.log_path = Path(settings.home) / "logs" / "dagster.log"
        loggers: dict = {"file": {"config": {"path": str(self.log_path)}}}
        if verbose:
            loggers["console"] = {}
        self.run_config = {"loggers": loggers}
        self.instance = instance_for(settings)
        self.defs = build_definitions(settings)  # one Definitions (and resources) for every step

    # -- helpers ----------------------------------------------------------------------------------
    def execute(self, job: str, what: str, run_config: dict | None = None, **kwargs) -> dg.ExecutionResult:
        """One run of the `recsys_platform` code location, executed here (re-executable from the UI)."""
        result = execute_as_location_run(self.defs, job, self.instance,
                                         run_config={**self.run_config, **(run_config or {})}, **kwargs)
        for evaluation in result.get_asset_check_evaluations():
            if not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR:
                self.report.failed_checks.append(f"{evaluation.asset_key.to_user_string()}:{evaluation.check_name}")
        if not result.success:
            raise RunFailedError(f"{what} failed: {_failure_reason(result)} (run {result.run_id[:8]}; "
                                 f"the full log is in {self.log_path})")
        return result

    # -- steps ------------------------------------------------------------------------------------
    def check_source(self) -> SourceDatabase:
        """Reachable, seeded (the embedded source only: on demand), and shaped like the contract."""
        settings = self.settings
        db = SourceDatabase(settings.source_url, create=settings.source_is_default)
        if settings.source_is_default:
            Path(settings.home).mkdir(parents=True, exist_ok=True)
        db.connect().close()
        if not is_seeded(db.engine):
            if not settings.source_is_default:
                raise SourceUnavailableError(
                    f"the source {db.masked_url} holds no ratings: the demo seeds only its own embedded source; "
                    f"run `recsys-platform seed --source-url '{db.masked_url}'` (with the password) to fill it")
            self.report.add(f"  seeded {db.masked_url} ({DEMO_SEED['mode']} mode): {seed(db.engine, **DEMO_SEED)}")
        db.validate_schema()
        return db

    def batch(self, db: SourceDatabase) -> None:
        layout = Layout(self.settings.hash_buckets)
        keys = layout.partition_keys(db.customer_numbers())
        db.dispose()
        if not layout.buckets:
            known = set(self.instance.get_dynamic_partitions(CUSTOMERS.name))
            self.instance.add_dynamic_partitions(CUSTOMERS.name, [k for k in keys if k not in known])
            # Every registered partition, the source's and those whose customer left (their
            # rebuild removes them from the lake): the range runs in registration order.
            keys = self.instance.get_dynamic_partitions(CUSTOMERS.name)
        self.execute(OBSERVE_JOB, "observing the source")
        with planned_as_one_event():
            result = self.execute(TRAINING_JOB, f"building {DATASET}",
                                  tags={"dagster/asset_partition_range_start": keys[0],
                                        "dagster/asset_partition_range_end": keys[-1]})
        meta = result.asset_materializations_for_node(TRAINING_KEY.path[-1])[0].metadata
        self.report.add(f"  {DATASET}: {meta['run_rows'].value:,} rows in {len(keys):,} partitions "
                        f"({layout.column}=...) via {meta['extraction'].value if 'extraction' in meta else 'Glue'} at "
                        f"{meta['dataset_location'].value}")

    def model_and_vectors(self) -> None:
        result = self.execute(MODEL_AND_VECTORS_JOB, "training or loading the vectors")
        model = result.asset_materializations_for_node("recommender_model")[0].metadata
        metrics = model["metrics"].value
        self.report.add(f"  recommender_model {model['model_version'].value}: held-out RMSE {metrics['rmse']} "
                        f"(bias baseline {metrics['rmse_bias']}), NDCG@10 {metrics['ndcg@10']} "
                        f"(popularity {metrics['ndcg@10_popularity']})")
        by_key = {m.asset_key.to_user_string(): m.metadata for m in result.asset_materializations_for_node("embeddings")}
        item, user = by_key["item_emb"], by_key["user_emb"]
        catalog = result.asset_materializations_for_node("serving_catalog")[0].metadata
        self.report.add(f"  pgvector: item_emb {item['dagster/row_count'].value} rows, user_emb "
                        f"{user['dagster/row_count'].value} rows, HNSW recall@10 {item['hnsw_recall@10'].value:.3f}; "
                        f"item_attributes {catalog['dagster/row_count'].value} ({catalog['out_of_stock'].value} out of "
                        "stock: never recommended)")
        campaign = result.asset_materializations_for_node("customer_recommendations")[0].metadata
        self.report.add(f"  customer_recommendations: top {campaign['top_n'].value} for "
                        f"{campaign['customers'].value} customers ({campaign['customers_short'].value} with fewer, "
                        f"and the reason) at {campaign['location'].value}")

    def streaming(self, count: int = 150) -> None:
        """Activity sessions into the stream (several events each, following the seed's tastes when
        the source is the demo's seed), the delivery runtime until drained, two samples shown."""
        from recsys_platform.streaming.producer import (
            SessionTastes,
            learnable_sessions,
            load_catalog,
            sessions,
        )

        settings = self.settings
        db = SourceDatabase(settings.source_url)
        customers, products = load_catalog(db.engine)
        db.dispose()
        runtime = wiring.delivery_runtime(settings, wiring.inference_service(settings), log=lambda *_: None)
        now, seed = dt.datetime.now(dt.timezone.utc), int(time.time())
        try:
            tastes = SessionTastes.of_seed(DEMO_SEED["scale"], DEMO_SEED["seed"], customers, products)
            produced = list(learnable_sessions(customers, tastes, count, now - dt.timedelta(minutes=count),
                                               malformed_share=0.05, seed=seed))
        except ValueError as e:  # a source seeded otherwise: one-event sessions, nothing to learn
            self.report.add(f"  {e}; one-event sessions instead")
            produced = list(sessions(customers, products, count * 3, malformed_share=0.05, seed=seed))
        runtime.stream.put_records([(k, d) for k, d, _ in produced])
        counters = runtime.run(once=True)
        events = len(produced)
        self.report.add(f"  {events} events: delivered {counters.delivered}, failed {counters.failed} "
                        f"({len(counters.reasons)} kinds of reason), dropped {counters.dropped}, balanced: "
                        f"{counters.balanced}")
        if not counters.balanced:
            self.report.failed_checks.append("delivery:records_in_equals_delivered_dropped_failed")
        known = {int(c["customerNumber"]) for c in customers}
        samples: dict[str, dict] = {}
        for obj in reversed(runtime.store.list()):
            if obj.key.startswith("processing-failed/") or is_hidden(obj.key) or len(samples) == 2:
                continue
            for rec in recommendations.records(runtime.store.read_bytes(obj.key), obj.key):
                samples.setdefault("known customer" if rec["customer_number"] in known else "new customer", rec)
        for kind, rec in sorted(samples.items()):
            self.report.add(f"  {kind} {rec['customer_number']} ({rec['city']}, {rec['country']}): recommended "
                            f"{', '.join(i['id'] for i in rec['recommended_items'])}")

    def ingestion(self) -> None:
        """One tick of `recommendations_sensor`, then the hourly partitions it requested."""
        sensor = self.defs.resolve_sensor_def("recommendations_sensor")
        # A fresh tick (no cursor): every hour in the look-back window with objects.
        with dg.build_sensor_context(instance=self.instance, definitions=self.defs, resources={
                "recommendations_store": self.defs.resources["recommendations_store"]}) as ctx:
            result = sensor.evaluate_tick(ctx)
        for request in result.run_requests or []:
            run = self.execute(RECOMMENDATIONS_JOB, f"ingesting hour {request.partition_key}",
                               partition_key=request.partition_key,
                               tags={**request.tags, "dagster/run_key": request.run_key})
            meta = run.asset_materializations_for_node("recommendations")[0].metadata
            online = run.asset_materializations_for_node(METRICS_KEY.path[-1])[0].metadata
            interactions = run.asset_materializations_for_node(INTERACTIONS_KEY.path[-1])[0].metadata
            hit_rate = (f"online hit rate@{ONLINE_K} {online['hit_rate'].value:.1%} of {online['judged'].value} "
                        "answers" if "hit_rate" in online else "no answer judged yet (no later event in a session)")
            self.report.add(f"  hour {request.partition_key}: {meta['dagster/row_count'].value} rows, "
                            f"{meta['failed'].value} failed ({meta['failure_rate'].value:.1%}), "
                            f"{meta['users'].value} users, {interactions['dagster/row_count'].value} interactions; "
                            f"{hit_rate}")
        if not result.run_requests:
            self.report.add(f"  recommendations_sensor: {result.skip_message}")

    def run(self) -> DemoReport:
        report, settings = self.report, self.settings
        # The embedded PostgreSQL (its first start runs initdb) starts while the batch runs, once
        # the source is known good (a demo that stops at its source check starts no server).
        pool = ThreadPoolExecutor(max_workers=1)
        db: list[SourceDatabase] = []
        vectors_ready: list = []

        def source_checked() -> None:
            db.append(self.check_source())
            vectors_ready.append(pool.submit(wiring.vector_dsn, settings))
            pool.shutdown(wait=False)

        report.add(f"recsys-platform demo: RECSYS_HOME={settings.home} (Dagster's event log: {self.log_path})")
        started = time.perf_counter()
        steps: list[tuple[str, str, Callable[[], object]]] = [
            ("source checked", "source_s", source_checked),
            (f"{DATASET} built, checked", "batch_s", lambda: self.batch(db[0])),
            ("model trained, evaluated, published; vectors loaded", "model_and_vectors_s",
             lambda: (vectors_ready[0].result(), self.model_and_vectors())),
            ("events streamed through the Lambdas", "streaming_s", self.streaming),
            ("the hour ingested by the sensor's run", "ingestion_s", self.ingestion),
        ]
        for name, timing, action in steps:
            with report.step(name, timing):
                action()
        report.timings["total_s"] = time.perf_counter() - started
        report.add(f"done in {report.timings['total_s']:.1f} s: " + (
            "FAILED checks: " + ", ".join(report.failed_checks) if report.failed_checks else "all checks passed"))
        report.add(f"buckets: {settings.lake_url}, {settings.artifacts_url}, {settings.recommendations_url}")
        report.add(f"open the UI over the same state: make ui RECSYS_HOME={settings.home}  "
                   f"(or RECSYS_HOME={settings.home} DAGSTER_HOME={settings.dagster_home} "
                   "dagster dev -w workspace.yaml)")
        if not (settings.vector_dsn or settings.vector_secret_arn):
            report.add(f"left running: the embedded PostgreSQL under {settings.pgdata} (the vectors `serve` and "
                       f"`deliver` answer from); stop it with: recsys-platform --home {settings.home} stop")
        return report


PLANNED_AS_SUBSET = "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS"


@contextmanager
def planned_as_one_event():
    """While creating the build's run: Dagster records the partitions it plans as one event (the
    range) rather than one event per partition. At ~15 ms per stored event that is ~1.8 s of the
    demo's 122 partitions. Dagster's price (its note on this switch): if the run fails, its
    partitions show as missing, not failed; the demo then stops with the reason anyway."""
    previous = os.environ.get(PLANNED_AS_SUBSET)
    os.environ[PLANNED_AS_SUBSET] = "true"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(PLANNED_AS_SUBSET, None)
        else:
            os.environ[PLANNED_AS_SUBSET] = previous


def instance_for(settings: Settings) -> dg.DagsterInstance:
    """A persistent Dagster instance under RECSYS_HOME, so `dagster dev` shows the demo's runs."""
    home = Path(settings.dagster_home)
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text("telemetry:\n  enabled: false\n")
    return dg.DagsterInstance.from_config(str(home))


def _failure_reason(result: dg.ExecutionResult) -> str:
    failure = next((e for e in result.all_events if e.is_step_failure), None)
    if failure is None:
        return "see the run's log"
    data = failure.step_failure_data
    if data.user_failure_data and data.user_failure_data.description:  # a dg.Failure: already one clear line
        return data.user_failure_data.description.strip()
    if not data.error:
        return "see the run's log"
    root = data.error  # Dagster's wrapper ("Error occurred while executing op") names no reason: its cause does
    while root.cause is not None:
        root = root.cause
    return root.message.strip().splitlines()[0]


def run_demo(settings: Settings, verbose: bool = False) -> DemoReport:
    """One demo per home at a time: two would build, train and switch the vectors of one home
    at once (`Busy` names the other's PID)."""
    with ProcessLock(Path(settings.home) / "demo.lock", "demo", f" on RECSYS_HOME={settings.home}",
                     "wait for it to finish, or give this one its own RECSYS_HOME"):
        return Demo(settings, verbose=verbose).run()
