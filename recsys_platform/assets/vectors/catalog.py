"""`item_attributes` and `customer_purchases`: what the serving rules read, refreshed from the source.

Stock moves hourly, the model daily: these two tables beside the vectors are refreshed on their own
schedule (RECSYS_CATALOG_CRON) without retraining, and with every new model (model_and_vectors_job).
"""

import dagster as dg

from recsys_platform.assets.batch.assets import SOURCE_KEY
from recsys_platform.assets.shared import OWNERS
from recsys_platform.errors import RecsysError
from recsys_platform.resources import SourceDatabaseResource, VectorStoreResource
from recsys_platform.vectors.catalog import items_from_products, load_catalog

ATTRIBUTES_KEY = dg.AssetKey("item_attributes")
PURCHASES_KEY = dg.AssetKey("customer_purchases")
ATTRIBUTES_MATCH = "rows_match_the_source_products"
PURCHASES_MATCH = "rows_match_the_source_purchases"
SERVED_HAVE_ATTRIBUTES = "every_served_item_has_attributes"
PREVIEW_ROWS = 10


def build_catalog_assets() -> dg.AssetsDefinition:
    @dg.multi_asset(
        specs=[
            dg.AssetSpec(ATTRIBUTES_KEY, deps=[SOURCE_KEY], group_name="vectors", kinds={"postgres"}, owners=OWNERS,
                         description="Each product's attributes the serving rules read, beside the vectors: "
                         "`item_attributes(id, in_stock, product_line, product_scale, price)` (price: MSRP), "
                         "from the source's `products`. Loaded whole and swapped in atomically; an item "
                         "without attributes is never recommended. Refreshed on RECSYS_CATALOG_CRON without "
                         "retraining."),
            dg.AssetSpec(PURCHASES_KEY, deps=[SOURCE_KEY], group_name="vectors", kinds={"postgres"}, owners=OWNERS,
                         description="`customer_purchases(customer, product)`: what each customer bought, which the "
                         "rule `exclude_bought` leaves out: the source's order lines (cancelled orders aside) "
                         "and its ratings (a rating is a purchase)."),
        ],
        check_specs=[
            dg.AssetCheckSpec(ATTRIBUTES_MATCH, asset=ATTRIBUTES_KEY, blocking=True,
                              description="One row per product of the source."),
            dg.AssetCheckSpec(PURCHASES_MATCH, asset=PURCHASES_KEY, blocking=True,
                              description="One row per distinct (customer, product) the source's order lines and ratings hold."),
            dg.AssetCheckSpec(SERVED_HAVE_ATTRIBUTES, asset=ATTRIBUTES_KEY,
                              description="Every item of the active vectors has attributes (one without is never "
                              "served: a WARN that the catalog and the model disagree)."),
        ],
    )
    def serving_catalog(context: dg.AssetExecutionContext, source: SourceDatabaseResource,
                        vector_store: VectorStoreResource):
        products = source.db.read_arrow("products")
        pairs, bought_from = source.db.purchases()
        items = items_from_products(products.to_pylist())
        store = vector_store.store
        try:
            loaded = load_catalog(store, items, pairs)
            active = store.active_version()
            served = set() if active is None else set(store.item_ids())
        except RecsysError as e:
            raise dg.Failure(description=f"{e}; the previous attributes keep serving") from None
        without = sorted(served - {i.id for i in items})
        out_of_stock = [i.id for i in items if i.in_stock <= 0]
        lines = sorted({i.product_line for i in items if i.product_line})
        preview = dg.MetadataValue.md("| id | in stock | line | scale | price |\n|---|---|---|---|---|\n" + "\n".join(
            f"| {i.id} | {i.in_stock:,} | {i.product_line} | {i.product_scale} | {i.price} |" for i in items[:PREVIEW_ROWS]))
        context.log.info(f"loaded {loaded['item_attributes']} item attributes ({len(out_of_stock)} out of stock) "
                         f"and {loaded['customer_purchases']} purchases in {loaded['load_s']:.2f} s")
        yield dg.MaterializeResult(asset_key=ATTRIBUTES_KEY, metadata={
            "dagster/row_count": loaded["item_attributes"], "out_of_stock": len(out_of_stock),
            "out_of_stock_examples": dg.MetadataValue.json(out_of_stock[:10]),
            "product_lines": dg.MetadataValue.json(lines), "preview": preview,
            "load_s": dg.MetadataValue.float(round(loaded["load_s"], 3))})
        yield dg.MaterializeResult(asset_key=PURCHASES_KEY, metadata={
            "dagster/row_count": loaded["customer_purchases"], "customers": len({c for c, _ in pairs}),
            "from": ", ".join(bought_from)})
        yield dg.AssetCheckResult(
            check_name=ATTRIBUTES_MATCH, asset_key=ATTRIBUTES_KEY, passed=loaded["item_attributes"] == products.num_rows,
            description=f"{loaded['item_attributes']:,} rows for {products.num_rows:,} source products")
        yield dg.AssetCheckResult(
            check_name=PURCHASES_MATCH, asset_key=PURCHASES_KEY, passed=loaded["customer_purchases"] == len(pairs),
            description=f"{loaded['customer_purchases']:,} rows for {len(pairs):,} distinct purchases in "
                        f"{' and '.join(bought_from)}")
        yield dg.AssetCheckResult(
            check_name=SERVED_HAVE_ATTRIBUTES, asset_key=ATTRIBUTES_KEY, passed=not without,
            severity=dg.AssetCheckSeverity.WARN,
            description=(f"all {len(served):,} items of version {active} have attributes" if not without else
                         f"{len(without):,} items of version {active} have none and are never served, e.g. {without[:3]}"),
            metadata={"active_version": active or "none"})

    return serving_catalog
