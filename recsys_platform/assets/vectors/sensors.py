"""`retrain_sensor`: a new model and its vectors once enough changed, without a person.

It fires when the training data changed (`ratings_ml_training` materialized after the model) or
when enough interactions were ingested since the model (`RECSYS_RETRAIN_INTERACTIONS`), at most
once per `RECSYS_RETRAIN_MIN_MINUTES`. A sensor and not an automation condition: the model must
wait until *every* run building the training data has finished (the stale schedule asks for up
to four ranges at once; a model trained between two of them would read a lake that matches no
build), and it must train with the vectors in one run so that the blocking checks keep a losing
model from serving.
"""

from __future__ import annotations

import time

import dagster as dg

from recsys_platform.assets.batch.assets import TRAINING_KEY
from recsys_platform.assets.batch.jobs import TRAINING_JOB
from recsys_platform.assets.feedback import INTERACTIONS_KEY
from recsys_platform.assets.ml.assets import MODEL_KEY
from recsys_platform.assets.shared import UNFINISHED
from recsys_platform.assets.vectors.jobs import model_and_vectors_job

RETRAIN_SENSOR = "retrain_sensor"
MAX_RECORDS = 10_000  # interaction materializations read per tick (an hour each: over a year)


def _latest(instance: dg.DagsterInstance, key: dg.AssetKey) -> dg.EventLogRecord | None:
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key), limit=1, ascending=False).records
    return records[0] if records else None


def interactions_since(instance: dg.DagsterInstance, after: int | None) -> tuple[int, int | None]:
    """Interactions in the hours materialized after storage id `after` (each hour's latest row
    count: an hour ingested again counts once), and the latest such storage id."""
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=INTERACTIONS_KEY, after_storage_id=after), limit=MAX_RECORDS,
        ascending=True).records
    rows: dict[str | None, int] = {}
    for r in records:
        count = r.asset_materialization.metadata.get("dagster/row_count")
        rows[r.partition_key] = int(count.value) if count is not None else 0
    return sum(rows.values()), (records[-1].storage_id if records else None)


def build_retrain_sensor(min_interactions: int, min_minutes: int) -> dg.SensorDefinition:
    @dg.sensor(name=RETRAIN_SENSOR, job=model_and_vectors_job, minimum_interval_seconds=60,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="Requests `model_and_vectors_job` when `ratings_ml_training` was materialized after the "
               "model last was (a rebuild of changed or deleted customers' partitions)"
               + (f", or when {min_interactions:,} interactions were ingested since" if min_interactions else "")
               + f"; at most once in {min_minutes} minutes, and once no build and no training is running. The run "
               "key names the change, so each change trains once (a failed training is not retried by this sensor: "
               "the next change, a person or a backfill is).")
    def retrain_sensor(context: dg.SensorEvaluationContext):
        instance = context.instance
        data = _latest(instance, TRAINING_KEY)
        if data is None:
            return dg.SkipReason("ratings_ml_training was never built")
        model = _latest(instance, MODEL_KEY)
        model_id = model.storage_id if model else None
        triggers, change = [], None  # why, and the run key's name for the change (the data's first)
        if model_id is None or data.storage_id > model_id:
            triggers.append("training data changed")
            change = str(data.storage_id)
        if min_interactions:
            new, latest = interactions_since(instance, model_id)
            if new >= min_interactions:
                triggers.append(f"{new:,} new interactions")
                change = change or f"interactions-{latest}"
        if not triggers:
            return dg.SkipReason("the model is newer than the training data"
                                 + (f", and fewer than {min_interactions:,} interactions arrived since" if min_interactions
                                    else ""))
        if model is not None and time.time() - model.timestamp < min_minutes * 60:
            return dg.SkipReason(f"{' and '.join(triggers)}, but the model was trained "
                                 f"{(time.time() - model.timestamp) / 60:.0f} min ago (at most once in {min_minutes} min)")
        for job in (TRAINING_JOB, model_and_vectors_job.name):
            busy = instance.get_runs(dg.RunsFilter(job_name=job, statuses=UNFINISHED), limit=1)
            if busy:
                return dg.SkipReason(f"run {busy[0].run_id} of {job} is not finished: the next tick looks again")
        return dg.RunRequest(run_key=f"retrain-after-{change}", tags={"recsys/trigger": " and ".join(triggers)})

    return retrain_sensor
