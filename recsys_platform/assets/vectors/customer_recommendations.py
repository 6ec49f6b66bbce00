"""`customer_recommendations`: every known customer's top N under the serving rules, in the lake.

What a campaign or an e-mail job reads: one Parquet file, replaced whole by each run, from the
active vectors and the current item attributes, through the same filtered search the stream and
the routes use (never an out-of-stock item; what a customer bought is left out by default).
"""

import dagster as dg
import pyarrow as pa

from recsys_platform.assets.shared import OWNERS
from recsys_platform.assets.vectors.assets import ITEM_KEY, USER_KEY
from recsys_platform.assets.vectors.catalog import ATTRIBUTES_KEY, PURCHASES_KEY
from recsys_platform.errors import RecsysError
from recsys_platform.resources import ObjectStoreResource, VectorStoreResource
from recsys_platform.storage import lake
from recsys_platform.vectors.catalog import read_attributes
from recsys_platform.vectors.rules import Rules
from recsys_platform.vectors.store import SessionQuery

CUSTOMER_RECOMMENDATIONS_KEY = dg.AssetKey("customer_recommendations")
DATASET = "customer_recommendations"
FILE = f"{DATASET}/{lake.PART_FILE}"
NO_OUT_OF_STOCK = "no_out_of_stock_item"
N_PER_CUSTOMER = "n_per_customer_or_the_reason"
BATCH = 500  # customers per round trip
SCHEMA = pa.schema([("customerNumber", pa.int32()), ("rank", pa.int32()), ("productCode", pa.string()),
                    ("score", pa.float64()), ("model_version", pa.string()), ("note", pa.string())])


class CustomerRecommendationsConfig(dg.Config):
    """The campaign's N and its rules (always in stock: never recommend what cannot be sold)."""

    top_n: int = 10
    exclude_bought: bool = True
    product_lines: list[str] = []
    exclude_product_lines: list[str] = []
    min_price: float | None = None
    max_price: float | None = None

    def rules(self) -> Rules:
        return Rules.from_json({"exclude_bought": self.exclude_bought, "product_lines": self.product_lines,
                                "exclude_product_lines": self.exclude_product_lines, "min_price": self.min_price,
                                "max_price": self.max_price})


def build_customer_recommendations() -> dg.AssetsDefinition:
    @dg.asset(
        key=CUSTOMER_RECOMMENDATIONS_KEY, deps=[ITEM_KEY, USER_KEY, ATTRIBUTES_KEY, PURCHASES_KEY],
        group_name="vectors", kinds={"parquet", "pgvector"}, owners=OWNERS,
        description="The top N items for every customer with a vector, under the serving rules (in stock; what "
        "the customer bought left out by default; lines and a price range by config), one row per item "
        f"(`customerNumber, rank, productCode, score, model_version, note`) in `<lake>/{FILE}`, replaced whole. "
        "A customer with fewer than N has a `note` saying why (a row with no product when none passes).",
        check_specs=[
            dg.AssetCheckSpec(NO_OUT_OF_STOCK, asset=CUSTOMER_RECOMMENDATIONS_KEY, blocking=True,
                              description="No recommended item is out of stock (the attributes as loaded)."),
            dg.AssetCheckSpec(N_PER_CUSTOMER, asset=CUSTOMER_RECOMMENDATIONS_KEY, blocking=True,
                              description="Every customer has N items, or fewer with the reason."),
        ],
    )
    def customer_recommendations(context: dg.AssetExecutionContext, config: CustomerRecommendationsConfig,
                                 vector_store: VectorStoreResource, lake_store: ObjectStoreResource):
        store, rules, n = vector_store.store, config.rules(), config.top_n
        try:
            version = store.active_version()
            if version is None:
                raise RecsysError("no vectors serve yet: materialise item_emb and user_emb first")
            customers = store.user_ids(version)
            rows: list[dict] = []
            for start in range(0, len(customers), BATCH):
                chunk = customers[start:start + BATCH]
                found = store.recommend_batch([SessionQuery(None, c, None, frozenset(), rules) for c in chunk],
                                              k=n, version=version)
                for customer, answer in zip(chunk, found):
                    note = answer.note(n)
                    rows += [{"customerNumber": customer, "rank": rank, "productCode": item.id, "score": item.score,
                              "model_version": version, "note": note}
                             for rank, item in enumerate(answer.recommended, start=1)]
                    if not answer.recommended:
                        rows.append({"customerNumber": customer, "rank": 0, "productCode": None, "score": None,
                                     "model_version": version, "note": note})
                context.log.info(f"{min(start + BATCH, len(customers)):,} of {len(customers):,} customers")
            attributes = read_attributes(store)
        except RecsysError as e:
            raise dg.Failure(description=str(e)) from None
        table = pa.Table.from_pylist(rows, schema=SCHEMA)
        lake_store.store.write_bytes(FILE, lake.encode_parquet(table))
        out_of_stock = sorted({r["productCode"] for r in rows if r["productCode"]
                               and attributes.get(r["productCode"]) is not None
                               and attributes[r["productCode"]].in_stock <= 0})
        unknown = sorted({r["productCode"] for r in rows if r["productCode"] and r["productCode"] not in attributes})
        per_customer: dict[int, int] = {}
        explained: set[int] = set()
        for r in rows:
            per_customer[r["customerNumber"]] = per_customer.get(r["customerNumber"], 0) + bool(r["productCode"])
            if r["note"]:
                explained.add(r["customerNumber"])
        unexplained = sorted(c for c in customers if per_customer.get(c, 0) != n and c not in explained)
        short = sum(1 for c in customers if per_customer.get(c, 0) < n)
        preview = table.slice(0, 10).to_pylist()
        return dg.MaterializeResult(
            metadata={"dagster/row_count": sum(1 for r in rows if r["productCode"]), "customers": len(customers),
                      "customers_short": short, "top_n": n, "rules": dg.MetadataValue.json(rules.to_json()),
                      "model_version": version, "location": lake_store.store.uri(FILE),
                      "preview": dg.MetadataValue.md("| customer | rank | product | score | note |\n|---|---|---|---|---|\n"
                                                     + "\n".join(f"| {r['customerNumber']} | {r['rank']} | "
                                                                 f"{r['productCode']} | {r['score']} | {r['note'] or ''} |"
                                                                 for r in preview))},
            check_results=[
                dg.AssetCheckResult(
                    check_name=NO_OUT_OF_STOCK, passed=not out_of_stock and not unknown,
                    description="no out-of-stock item" if not out_of_stock and not unknown else
                    f"{len(out_of_stock)} out-of-stock item(s) {out_of_stock[:5]}, {len(unknown)} without attributes "
                    f"{unknown[:5]}"),
                dg.AssetCheckResult(
                    check_name=N_PER_CUSTOMER, passed=not unexplained,
                    description=f"{len(customers) - short:,} customers have {n} items, {short:,} fewer with the reason"
                    if not unexplained else f"{len(unexplained)} customers have fewer than {n} items and no reason, "
                    f"e.g. {unexplained[:5]}"),
            ],
        )

    return customer_recommendations
