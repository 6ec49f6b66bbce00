"""The vectors domain's jobs: a new model, the vectors and catalog it serves and the campaigns'
table as one run; the serving rules' catalog alone; the campaigns' table alone."""

from __future__ import annotations

import dagster as dg

from recsys_platform.assets.ml.assets import MODEL_KEY
from recsys_platform.assets.vectors.assets import ITEM_KEY, USER_KEY
from recsys_platform.assets.vectors.catalog import ATTRIBUTES_KEY, PURCHASES_KEY
from recsys_platform.assets.vectors.customer_recommendations import CUSTOMER_RECOMMENDATIONS_KEY
from recsys_platform.deploy.dagster_instance import MODEL_QUEUE, QUEUE_KEY

MODEL_AND_VECTORS_JOB = "model_and_vectors_job"
CATALOG_JOB = "item_attributes_job"
CUSTOMER_RECOMMENDATIONS_JOB = "customer_recommendations_job"

model_and_vectors_job = dg.define_asset_job(
    MODEL_AND_VECTORS_JOB, selection=[MODEL_KEY, ITEM_KEY, USER_KEY, ATTRIBUTES_KEY, PURCHASES_KEY,
                                    CUSTOMER_RECOMMENDATIONS_KEY],
    description="Trains, evaluates and publishes the model, then loads and switches the vectors, with the "
    "items' attributes and the customers' purchases the serving rules read, and writes every customer's top N.",
    tags={QUEUE_KEY: MODEL_QUEUE})  # one at a time in the run queue: two would race to switch the vectors
catalog_job = dg.define_asset_job(
    CATALOG_JOB, selection=[ATTRIBUTES_KEY, PURCHASES_KEY],
    description="Refreshes the items' attributes (stock, lines, prices) and the customers' purchases from the source.")
customer_recommendations_job = dg.define_asset_job(
    CUSTOMER_RECOMMENDATIONS_JOB, selection=[CUSTOMER_RECOMMENDATIONS_KEY],
    description="Every known customer's top N under the serving rules, into the lake (what a campaign reads).")
