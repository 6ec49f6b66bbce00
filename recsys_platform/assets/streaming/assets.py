"""Hourly `recommendations`: one hour of the recommendations bucket compacted into the lake, with checks."""

import json

import dagster as dg

from recsys_platform.assets.shared import OWNERS
from recsys_platform.ml import artifacts
from recsys_platform.resources import ObjectStoreResource
from recsys_platform.streaming.recommendations import (
    DATASET,
    REJECTED,
    compact_hour,
    hour_folder,
    hour_of,
)

RECS_KEY = dg.AssetKey("recommendations")
SCHEMA_CHECK = "records_have_the_contract_fields"
CATALOG_CHECK = "recommended_ids_exist_in_the_catalog"
FAILURE_CHECK = "failure_rate_under_threshold"
MAX_FAILURE_RATE = 0.2
MAX_NAMED = 20  # rejected and ignored objects named in the metadata; the rejected file keeps all
PREVIEW_COLUMNS = ("session_id", "customer_number", "cart", "recommended_items", "similar_to", "similar_items",
                   "model_version")


class RecommendationsConfig(dg.Config):
    max_failure_rate: float = MAX_FAILURE_RATE


def build_recommendations_asset(hourly: dg.HourlyPartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(
        # No dependency on the vectors that answered: the loop (answers -> interactions -> model ->
        # vectors -> answers) is closed by the stream at run time; the asset graph must stay acyclic,
        # and this asset reads the bucket, not the vector tables.
        key=RECS_KEY, partitions_def=hourly, group_name="streaming", owners=OWNERS, kinds={"parquet", "kinesis"},
        description="One hour of recommendations delivered by the stream (Firehose or the local delivery "
        "runtime) under `<recommendations>/YYYY/MM/DD/HH/`, compacted into one Parquet file at "
        "`<lake>/recommendations/hour=YYYY-MM-DD-HH/`, with the hour's failures counted from "
        "`processing-failed/`. A bad line or object (truncated, binary, off-contract) is counted, named in the "
        "metadata and kept in `<lake>/recommendations_rejected/hour=YYYY-MM-DD-HH/`; it never fails the hour. "
        "Writers' temporaries and keys outside the hour's folder are ignored. Rerunning an hour rewrites the "
        "same files.",
        check_specs=[
            dg.AssetCheckSpec(SCHEMA_CHECK, asset=RECS_KEY, description="Every line of the hour's objects is a record "
                             "with the contract's fields and types; bad lines are kept in `recommendations_rejected/`."),
            dg.AssetCheckSpec(CATALOG_CHECK, asset=RECS_KEY, description="Every recommended id is an item of the model version that produced it."),
            dg.AssetCheckSpec(FAILURE_CHECK, asset=RECS_KEY, description=f"Failed records under {MAX_FAILURE_RATE:.0%} of the hour's events."),
        ],
    )
    def recommendations(context: dg.AssetExecutionContext, config: RecommendationsConfig,
                        recommendations_store: ObjectStoreResource, lake_store: ObjectStoreResource,
                        artifacts_store: ObjectStoreResource) -> dg.MaterializeResult:
        hour = hour_of(context.partition_key)
        result = compact_hour(recommendations_store.store, lake_store.store, hour)
        table = result.table
        versions = sorted(set(table.column("model_version").to_pylist()))
        catalogs, unreadable = artifacts.item_catalogs(artifacts_store.store, versions)
        catalog: set[str] = set().union(*catalogs.values())
        unknown = set().union(*(result.recommended_ids - items for items in catalogs.values())) | {
            f"<model version {version} unreadable: {reason}>" for version, reason in unreadable.items()}
        rate = result.failure_rate
        rejected_at = hour_folder(REJECTED, hour)
        preview = [dg.TableRecord({
            "session_id": r["session_id"], "customer_number": r["customer_number"],
            "cart": ", ".join(b.get("product_code", "?") if isinstance(b, dict) else "?"
                              for b in json.loads(r["browse_history"])),
            "recommended_items": ", ".join(i["id"] for i in r["recommended_items"]),
            "similar_to": r["similar_product_code"] or "",
            "similar_items": ", ".join(i["id"] for i in r["similar_items"]),
            "model_version": r["model_version"]}) for r in table.slice(0, 5).to_pylist()]
        bad = result.rejected_objects()
        if bad:
            context.log.warning(f"{len(result.rejected)} line(s) rejected in {len(bad)} object(s), kept at "
                                f"{lake_store.store.uri(rejected_at)}: "
                                + "; ".join(f"{k}: {v}" for k, v in list(bad.items())[:3]))
        return dg.MaterializeResult(
            metadata={"dagster/row_count": table.num_rows, "events": result.events, "failed": result.failed,
                      "failure_rate": dg.MetadataValue.float(round(rate, 4)),
                      "users": len(set(table.column("customer_number").to_pylist())),
                      "catalog_items_recommended": len(result.recommended_ids),
                      "catalog_coverage": dg.MetadataValue.float(
                          round(len(result.recommended_ids & catalog) / len(catalog), 4) if catalog else 0.0),
                      "model_versions": dg.MetadataValue.json(versions), "objects": len(result.objects.read),
                      "rejected": len(result.rejected),
                      "rejected_objects": dg.MetadataValue.json(dict(list(bad.items())[:MAX_NAMED])),
                      "ignored_objects": dg.MetadataValue.json(result.objects.ignored[:MAX_NAMED]),
                      "preview": dg.MetadataValue.table(preview, schema=dg.TableSchema(columns=[
                          dg.TableColumn(c, "int" if c == "customer_number" else "string") for c in PREVIEW_COLUMNS])),
                      "location": lake_store.store.uri(hour_folder(DATASET, hour))},
            check_results=[
                dg.AssetCheckResult(check_name=SCHEMA_CHECK, passed=not result.rejected,
                                    description=f"{len(result.rejected)} line(s) rejected in {len(bad)} object(s)"
                                    + (f", e.g. {next(iter(bad))}: {next(iter(bad.values()))}; all kept in "
                                       f"{rejected_at}/" if bad else "")),
                dg.AssetCheckResult(check_name=CATALOG_CHECK, passed=not unknown,
                                    description=f"{len(unknown)} unknown id(s)" + (f", e.g. {sorted(unknown)[:3]}" if unknown else "")),
                dg.AssetCheckResult(check_name=FAILURE_CHECK, passed=rate <= config.max_failure_rate,
                                    severity=dg.AssetCheckSeverity.WARN,
                                    description=f"failure rate {rate:.1%} (threshold {config.max_failure_rate:.0%})"),
            ],
        )

    return recommendations
