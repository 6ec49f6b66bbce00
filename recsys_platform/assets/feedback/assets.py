"""Hourly `interactions` (what customers did) and `online_metrics` (did the answers work), with checks."""

import datetime as dt

import dagster as dg
import pandas as pd
import pyarrow as pa

from recsys_platform.assets.shared import OWNERS
from recsys_platform.assets.streaming.assets import RECS_KEY
from recsys_platform.feedback import interactions as fb
from recsys_platform.feedback import metrics as om
from recsys_platform.ml import artifacts
from recsys_platform.ml.plots import hit_rate_by_hour
from recsys_platform.resources import ObjectStoreResource
from recsys_platform.storage import lake
from recsys_platform.streaming import recommendations as recs
from recsys_platform.streaming.recommendations import hour_folder, hour_of, lake_key

INTERACTIONS_KEY = dg.AssetKey("interactions")
METRICS_KEY = dg.AssetKey("online_metrics")
KEYS_CHECK = "keys_present_and_unique"
UNKNOWN_CHECK = "unknown_products_under_threshold"
NOT_WORSE_CHECK = "new_version_not_worse"
LOOKBACK_HOURS = 24  # hours read back: repeats of an event in earlier hours; the versions compared; the plot
PREVIEW_ROWS = 5


def _hours_before(hour: dt.datetime, n: int) -> list[dt.datetime]:
    return [hour - dt.timedelta(hours=b) for b in range(n, 0, -1)]


class InteractionsConfig(dg.Config):
    max_unknown_share: float = 0.05  # interactions naming a product the serving catalog lacks


def build_interactions_asset(hourly: dg.HourlyPartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        key=INTERACTIONS_KEY, partitions_def=hourly, group_name="feedback", owners=OWNERS, kinds={"parquet"},
        deps=[RECS_KEY],
        description="Every browse and cart item of every valid event of the hour as implicit feedback (customer, "
        "product, kind, quantity, session, event time, the recommendation acted on, the answer it got), events whose "
        "recommendation failed included, read from the recommendations bucket (records and `processing-failed/`). An "
        "event counts once however often it was delivered; a rerun rewrites the same file at "
        "`<lake>/interactions/hour=YYYY-MM-DD-HH/`.",
        check_specs=[
            dg.AssetCheckSpec(KEYS_CHECK, asset=INTERACTIONS_KEY, blocking=True,
                              description="The written hour has every key (interaction, customer, product, session) "
                              "and no interaction twice."),
            dg.AssetCheckSpec(UNKNOWN_CHECK, asset=INTERACTIONS_KEY,
                              description="Interactions naming a product the serving model's catalog lacks stay under "
                              "a share (they are counted and named)."),
        ],
    )
    def interactions(context: dg.AssetExecutionContext, config: InteractionsConfig,
                     recommendations_store: ObjectStoreResource, lake_store: ObjectStoreResource,
                     artifacts_store: ObjectStoreResource) -> dg.MaterializeResult:
        hour = hour_of(context.partition_key)
        built = fb.build_hour(recommendations_store.store, lake_store.store, hour)
        written = lake.read_partitions(lake_store.store, fb.DATASET, recs.COLUMN, [lake_key(hour)])
        missing, twice = fb.missing_keys(written), fb.duplicated_ids(written)
        earlier = fb.read_window(lake_store.store, [lake_key(h) for h in _hours_before(hour, LOOKBACK_HOURS)])
        repeated_from_earlier = len(set(written.column("interaction_id").to_pylist())
                                    & set(earlier.column("interaction_id").to_pylist()))
        serving = artifacts.serving_version(artifacts_store.store)
        catalog = artifacts.item_catalogs(artifacts_store.store, [serving] if serving else [])[0].get(serving)
        products = written.column("product_code").to_pylist()
        unknown = {p for p in products if p not in catalog} if catalog is not None else set()
        unknown_rows = sum(p in unknown for p in products)
        unknown = sorted(unknown)
        share = unknown_rows / len(products) if products else 0.0
        kinds = pd.Series(written.column("kind").to_pylist(), dtype=object).value_counts()
        preview = [dg.TableRecord({"customer_number": r["customer_number"], "product_code": r["product_code"],
                                   "kind": r["kind"], "quantity": r["quantity"], "session_id": r["session_id"],
                                   "event_time": str(r["event_time"]), "model_version": r["model_version"] or ""})
                   for r in written.slice(0, PREVIEW_ROWS).to_pylist()]
        ev = built.events
        return dg.MaterializeResult(
            metadata={"dagster/row_count": written.num_rows, "events": len(ev.events),
                      "cart_items": int(kinds.get(fb.CART, 0)), "browse_items": int(kinds.get(fb.BROWSE, 0)),
                      "customers": len(set(written.column("customer_number").to_pylist())),
                      "events_without_answer": ev.unanswered, "invalid_records": ev.invalid,
                      "repeated_records": ev.repeated, "repeated_from_earlier_hours": repeated_from_earlier,
                      "unknown_products": dg.MetadataValue.json(unknown[:20]), "unknown_product_rows": unknown_rows,
                      "preview": dg.MetadataValue.table(preview, schema=dg.TableSchema(columns=[
                          dg.TableColumn(c, "int" if c in ("customer_number", "quantity") else "string")
                          for c in ("customer_number", "product_code", "kind", "quantity", "session_id", "event_time",
                                    "model_version")])),
                      "location": lake_store.store.uri(hour_folder(fb.DATASET, hour))},
            check_results=[
                dg.AssetCheckResult(
                    check_name=KEYS_CHECK, passed=not missing and not twice,
                    description=(f"nulls per key {missing}; " if missing else "") + (
                        f"{len(twice)} interaction(s) twice, e.g. {twice[:3]}" if twice else
                        f"{written.num_rows} interactions, each once with every key")),
                dg.AssetCheckResult(
                    check_name=UNKNOWN_CHECK, passed=share <= config.max_unknown_share,
                    severity=dg.AssetCheckSeverity.WARN,
                    description="no serving model: products not judged" if catalog is None else
                    f"{unknown_rows} interaction(s) ({share:.1%}, threshold {config.max_unknown_share:.0%}) name "
                    f"{len(unknown)} product(s) model {serving} does not know" + (f", e.g. {unknown[:3]}" if unknown else "")),
            ],
        )

    return interactions


class OnlineMetricsConfig(dg.Config):
    k: int = om.K  # the top k of each answer a later cart must be in to count as a hit
    min_judged: int = 50  # answers each version needs before the versions are compared
    margin: float = 0.02  # a new version may trail the previous one's hit rate by this much before a warning


def build_online_metrics_asset(hourly: dg.HourlyPartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        key=METRICS_KEY, partitions_def=hourly, group_name="feedback", owners=OWNERS, kinds={"parquet"},
        deps=[RECS_KEY, INTERACTIONS_KEY],
        description="The hour's online metrics per model version: hit rate at k (a product of an answer's top k "
        "carted later in the session), cart adds attributed to an answer, catalog coverage of what was served, "
        "latency p50/p99 from the event's arrival to its answer written, and the failure rate; at "
        "`<lake>/online_metrics/hour=YYYY-MM-DD-HH/`, plotted across the last hours by version.",
        check_specs=[dg.AssetCheckSpec(
            NOT_WORSE_CHECK, asset=METRICS_KEY,
            description=f"Over the last {LOOKBACK_HOURS} hours, the newest model version's hit rate is not below the "
            "previous version's by more than a margin (with too few judged answers, it says so and passes).")],
    )
    def online_metrics(context: dg.AssetExecutionContext, config: OnlineMetricsConfig,
                       recommendations_store: ObjectStoreResource, lake_store: ObjectStoreResource,
                       artifacts_store: ObjectStoreResource) -> dg.MaterializeResult:
        hour = hour_of(context.partition_key)
        store = lake_store.store
        served = lake.read_partitions(store, recs.DATASET, recs.COLUMN, [lake_key(hour)])
        if not served.num_rows:
            served = recs.SCHEMA.empty_table()
        before = lake.read_partitions(store, recs.DATASET, recs.COLUMN, [lake_key(hour - dt.timedelta(hours=1))])
        failed = len(recs.failed_lines(recommendations_store.store,
                                       recs.hour_keys(recommendations_store.store, hour)).values)
        catalogs, _ = artifacts.item_catalogs(artifacts_store.store, sorted(set(served.column("model_version").to_pylist())))
        table = om.hour_metrics(served, fb.read_window(store, [lake_key(hour)]), failed,
                                {v: len(items) for v, items in catalogs.items()},
                                before if before.num_rows else None, k=config.k)
        store.write_bytes(lake.partition_file(om.DATASET, recs.COLUMN, lake_key(hour)), lake.encode_parquet(table))
        hours = [*_hours_before(hour, LOOKBACK_HOURS), hour]
        history = lake.read_partitions(store, om.DATASET, recs.COLUMN, [lake_key(h) for h in hours])
        rows = [{**r, "hour": hour_of(r[recs.COLUMN] + ":00")} for r in history.to_pylist()] if history.num_rows else []
        compared = om.version_comparison(pd.DataFrame(rows), config.min_judged) if rows else None
        if compared is None:
            passed, note = True, (f"fewer than two versions with {config.min_judged} judged answers each in the last "
                                  f"{LOOKBACK_HOURS} hours: not compared")
        else:
            new, prev, new_rate, prev_rate = compared
            passed = new_rate >= prev_rate - config.margin
            note = (f"{new} hit rate {new_rate:.3f} against {prev}'s {prev_rate:.3f} (margin {config.margin})"
                    + ("" if passed else ": the new version does worse"))
        judged, hits = sum(table.column("judged").to_pylist()), sum(table.column("hits").to_pylist())
        by_version = [dg.TableRecord({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()
                                      if v is not None}) for r in table.to_pylist()]
        overall = {"hit_rate": dg.MetadataValue.float(round(hits / judged, 4))} if judged else {}
        return dg.MaterializeResult(
            metadata={"dagster/row_count": table.num_rows, **overall, "judged": judged,
                      "by_version": dg.MetadataValue.table(by_version, schema=dg.TableSchema(columns=[
                          dg.TableColumn(f.name, "string" if f.name == "model_version" else
                                         "int" if pa.types.is_integer(f.type) else "float") for f in om.SCHEMA])),
                      "hit_rate_plot": dg.MetadataValue.md(hit_rate_by_hour(rows) if rows else "no hours yet"),
                      "location": store.uri(hour_folder(om.DATASET, hour))},
            check_results=[dg.AssetCheckResult(check_name=NOT_WORSE_CHECK, passed=passed,
                                               severity=dg.AssetCheckSeverity.WARN, description=note)],
        )

    return online_metrics
