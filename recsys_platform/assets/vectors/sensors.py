"""`retrain_sensor`: a new model and its vectors once the training data changed, without a person.

A sensor and not an automation condition: the model must wait until *every* run building the
training data has finished (the stale schedule asks for up to four ranges at once; a model
trained between two of them would read a lake that matches no build), and it must train with
the vectors in one run so that the blocking checks keep a losing model from serving.
"""

from __future__ import annotations

import dagster as dg

from recsys_platform.assets.batch.assets import TRAINING_KEY
from recsys_platform.assets.batch.jobs import TRAINING_JOB
from recsys_platform.assets.ml.assets import MODEL_KEY
from recsys_platform.assets.shared import UNFINISHED
from recsys_platform.assets.vectors.jobs import model_and_vectors_job

RETRAIN_SENSOR = "retrain_sensor"


def _latest_storage_id(instance: dg.DagsterInstance, key: dg.AssetKey) -> int | None:
    records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key), limit=1, ascending=False).records
    return records[0].storage_id if records else None


def build_retrain_sensor() -> dg.SensorDefinition:
    @dg.sensor(name=RETRAIN_SENSOR, job=model_and_vectors_job, minimum_interval_seconds=60,
               default_status=dg.DefaultSensorStatus.RUNNING,
               description="Requests `model_and_vectors_job` when `ratings_ml_training` was materialized after "
               "the model last was (a rebuild of changed or deleted customers' partitions), once no build and "
               "no training is running; the run key names that materialization, so each change trains once "
               "(a failed training is not retried by this sensor: the next change, a person or a backfill is).")
    def retrain_sensor(context: dg.SensorEvaluationContext):
        instance = context.instance
        data = _latest_storage_id(instance, TRAINING_KEY)
        if data is None:
            return dg.SkipReason("ratings_ml_training was never built")
        model = _latest_storage_id(instance, MODEL_KEY)
        if model is not None and model > data:
            return dg.SkipReason("the model is newer than the training data")
        for job in (TRAINING_JOB, model_and_vectors_job.name):
            busy = instance.get_runs(dg.RunsFilter(job_name=job, statuses=UNFINISHED), limit=1)
            if busy:
                return dg.SkipReason(f"run {busy[0].run_id} of {job} is not finished: the next tick looks again")
        return dg.RunRequest(run_key=f"retrain-after-{data}", tags={"recsys/trigger": "training data changed"})

    return retrain_sensor
