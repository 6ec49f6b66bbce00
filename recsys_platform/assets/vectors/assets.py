"""`item_emb` and `user_emb`: the published embeddings loaded into pgvector, checked, then switched."""

import dagster as dg
import numpy as np

from recsys_platform.assets.ml.assets import MODEL_KEY
from recsys_platform.assets.shared import OWNERS
from recsys_platform.errors import RecsysError
from recsys_platform.ml import artifacts
from recsys_platform.resources import ObjectStoreResource, VectorStoreResource

ITEM_KEY = dg.AssetKey("item_emb")
USER_KEY = dg.AssetKey("user_emb")
COUNTS = "row_counts_match_csv"
DIMENSIONS = "dimensions_match_manifest"
SELF_NEAREST = "item_is_its_own_nearest_neighbour"
RECALL = "hnsw_recall_at_10"
RECALL_THRESHOLD = 0.95
KEEP_VERSIONS = 3


class VectorConfig(dg.Config):
    ef_search: int = 100
    recall_queries: int = 200
    keep_versions: int = KEEP_VERSIONS


def hnsw_recall(store, version: str, user_vectors: np.ndarray, item_ids: list[str], item_vectors: np.ndarray,
                queries: int, ef_search: int, k: int = 10, seed: int = 0) -> float:
    """Mean overlap of the index's top-k with exact inner-product search (numpy), over sampled users."""
    rng = np.random.default_rng(seed)
    sample = user_vectors[rng.choice(len(user_vectors), size=min(queries, len(user_vectors)), replace=False)]
    found = store.items_for_users(sample, k=k, ef_search=ef_search, version=version)
    exact = np.argsort(-(sample.astype(np.float64) @ item_vectors.astype(np.float64).T), axis=1)[:, :k]
    hits = [len({n.id for n in f} & {item_ids[j] for j in e}) / k for f, e in zip(found, exact)]
    return float(np.mean(hits)) if hits else 0.0


def version_of_this_run(context: dg.AssetExecutionContext) -> str | None:
    """The model version this run's `recommender_model` published, when the model ran in this run
    (None: the vectors run alone, and load LATEST). Not LATEST itself: another run on the same
    artifacts may have published since, and this run's checks judged this run's model."""
    records = context.instance.get_records_for_run(
        context.run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
    for record in records:
        materialization = record.event_log_entry.asset_materialization
        if materialization is not None and materialization.asset_key == MODEL_KEY:
            value = materialization.metadata.get("model_version")
            return str(value.value) if value is not None else None
    return None


def build_vector_assets() -> dg.AssetsDefinition:
    # Each check judges the table it names: counts and dimensions per table; the two index
    # checks on item_emb (user vectors are only the queries of the recall check).
    checks = {
        (ITEM_KEY, COUNTS): "item_emb has one row per line of item_embeddings.csv.",
        (USER_KEY, COUNTS): "user_emb has one row per line of user_embeddings.csv.",
        (ITEM_KEY, DIMENSIONS): "Every item vector has the manifest's dimension.",
        (USER_KEY, DIMENSIONS): "Every customer vector has the manifest's dimension.",
        (ITEM_KEY, SELF_NEAREST): "By cosine, every item's nearest item is itself (or an exact duplicate).",
        (ITEM_KEY, RECALL): f"The HNSW index finds at least {RECALL_THRESHOLD:.0%} of the exact top 10 items "
                            "for sampled customers.",
    }

    @dg.multi_asset(
        specs=[
            dg.AssetSpec(ITEM_KEY, deps=[MODEL_KEY], group_name="vectors", kinds={"postgres", "pgvector"}, owners=OWNERS,
                         description="Item embeddings of the current model version: `item_emb(id varchar primary key, "
                         "embedding vector(32))`, HNSW indexes for inner product (user to item) and cosine (item to item)."),
            dg.AssetSpec(USER_KEY, deps=[MODEL_KEY], group_name="vectors", kinds={"postgres", "pgvector"}, owners=OWNERS,
                         description="Customer embeddings of the current model version: `user_emb(id int primary key, "
                         "embedding vector(32))`, HNSW index for inner product."),
        ],
        check_specs=[dg.AssetCheckSpec(name, asset=key, description=text, blocking=True)
                     for (key, name), text in checks.items()],
    )
    def embeddings(context: dg.AssetExecutionContext, config: VectorConfig, artifacts_store: ObjectStoreResource,
                   vector_store: VectorStoreResource):
        """Loads the version this run's model published (LATEST when the model is not in the run)
        into its own tables, checks them, and only then switches the public views (and then
        `CURRENT`): the model and its vectors start serving together."""
        try:
            version, manifest, emb = artifacts.load_embeddings(artifacts_store.store, version_of_this_run(context))
            store = vector_store.store
            active = store.active_version()
            if active == version:
                context.log.info(f"version {version} is already active; nothing to load")
                timings = {}
            else:
                timings = store.load_version(version, emb["item"], emb["user"], manifest["dim"])
        except RecsysError as e:
            raise dg.Failure(description=f"{e}; the previous version keeps serving") from None
        counts = store.counts(version)
        dims = store.dimensions(version)
        checked, strangers = store.nearest_item_to_itself(config.ef_search, version)
        recall = hnsw_recall(store, version, emb["user"][1], emb["item"][0], emb["item"][1],
                             config.recall_queries, config.ef_search)
        csv_rows = {"item": len(emb["item"][0]), "user": len(emb["user"][0])}
        files = {"item": "item_embeddings.csv", "user": "user_embeddings.csv"}

        def rows_result(kind: str) -> tuple[bool, str]:
            same = counts[kind] == csv_rows[kind]
            return same, (f"{kind}_emb has {counts[kind]:,} rows, " + ("as many as" if same else "but")
                          + f" {files[kind]} has {csv_rows[kind]:,}")

        def dims_result(kind: str) -> tuple[bool, str]:
            same = dims[kind] == manifest["dim"]
            return same, (f"{kind}_emb vectors have {dims[kind]} dimensions"
                          + (", as the manifest says" if same else f"; the manifest says {manifest['dim']}"))

        results = {
            (ITEM_KEY, COUNTS): rows_result("item"),
            (USER_KEY, COUNTS): rows_result("user"),
            (ITEM_KEY, DIMENSIONS): dims_result("item"),
            (USER_KEY, DIMENSIONS): dims_result("user"),
            (ITEM_KEY, SELF_NEAREST): (not strangers, f"{checked - len(strangers):,} of {checked:,} items are "
                                       "their own nearest neighbour" + (f"; not: {', '.join(strangers[:3])}" if strangers else "")),
            (ITEM_KEY, RECALL): (recall >= RECALL_THRESHOLD, f"the index finds {recall:.1%} of the exact top 10 "
                                 f"(at least {RECALL_THRESHOLD:.0%} required; ef_search {config.ef_search})"),
        }
        passed = all(ok for ok, _ in results.values())
        if passed and active != version:
            store.activate(version)  # the serving model follows the active vectors (one version per answer)
            dropped = store.retain(config.keep_versions)
            context.log.info(f"activated {version}; dropped old versions {dropped}")
        if passed:
            artifacts.set_current(artifacts_store.store, version)  # idempotent: a rerun re-records it
        else:
            context.log.error(f"version {version} failed its checks; {active} keeps serving")
        meta = {"model_version": version, "active_version": store.active_version(), "hnsw_recall@10": recall,
                **{k: dg.MetadataValue.float(round(v, 3)) for k, v in timings.items()}}
        yield dg.MaterializeResult(asset_key=ITEM_KEY, metadata={**meta, "dagster/row_count": counts["item"]})
        yield dg.MaterializeResult(asset_key=USER_KEY, metadata={**meta, "dagster/row_count": counts["user"]})
        for (key, name), (ok, text) in results.items():
            yield dg.AssetCheckResult(check_name=name, asset_key=key, passed=bool(ok),
                                      severity=dg.AssetCheckSeverity.ERROR, description=text)

    return embeddings
