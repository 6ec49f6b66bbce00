"""`recommendations_sensor`: asks for an hour of `recommendations` when the bucket's hour changed."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import dagster as dg

from recsys_platform.assets.streaming.jobs import recommendations_job
from recsys_platform.resources import ObjectStoreResource
from recsys_platform.streaming import firehose
from recsys_platform.streaming.recommendations import hour_keys

LOOKBACK_HOURS = 6
MAX_RETRIES = 3  # a failed hour is requested again this many times (each a new run key), then left to a person


def _last_run_failed(instance: dg.DagsterInstance, partition_key: str) -> bool:
    runs = instance.get_runs(dg.RunsFilter(job_name=recommendations_job.name,
                                           tags={"dagster/partition": partition_key}), limit=1)
    return bool(runs) and runs[0].status == dg.DagsterRunStatus.FAILURE


def build_recommendations_sensor(hourly: dg.HourlyPartitionsDefinition) -> dg.SensorDefinition:
    first_hour = hourly.start.astimezone(dt.timezone.utc)

    @dg.sensor(job=recommendations_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING,
               description=f"Lists the recommendations bucket hour by hour over the last {LOOKBACK_HOURS} hours "
               "(never the whole bucket) and requests the hour's `recommendations` partition when its set of "
               f"objects changed, or again (up to {MAX_RETRIES} times) when the hour's last run failed; run keys "
               "come from the objects seen, so a rerun of a tick is deduplicated. "
               "Hours before RECSYS_STREAM_START are not partitions and are left alone.")
    def recommendations_sensor(context: dg.SensorEvaluationContext, recommendations_store: ObjectStoreResource):
        # The cursor: each hour's digest of its objects, and how many times a failed run was retried.
        cursor = {k: v if isinstance(v, list) else [v, 0]
                  for k, v in (json.loads(context.cursor) if context.cursor else {}).items()}
        now = dt.datetime.now(dt.timezone.utc)
        requests, seen = [], {}
        for back in range(LOOKBACK_HOURS, -1, -1):
            hour = (now - dt.timedelta(hours=back)).replace(minute=0, second=0, microsecond=0)
            if hour < first_hour:
                continue
            keys = hour_keys(recommendations_store.store, hour).read
            if not keys:
                continue
            digest = hashlib.sha1("\n".join(keys).encode()).hexdigest()[:16]
            key = hour.strftime("%Y-%m-%d-%H:00")
            known, retries = cursor.get(key, [None, 0])
            tags = {"recsys/objects": str(len(keys))}
            if known != digest:
                seen[key] = [digest, 0]
                requests.append(dg.RunRequest(run_key=f"{key}:{digest}", partition_key=key, tags=tags))
            elif retries < MAX_RETRIES and _last_run_failed(context.instance, key):
                seen[key] = [digest, retries + 1]
                requests.append(dg.RunRequest(run_key=f"{key}:{digest}:retry-{retries + 1}", partition_key=key,
                                              tags={**tags, "recsys/retry": str(retries + 1)}))
            else:
                seen[key] = [digest, retries]
        if not requests:
            return dg.SkipReason(f"no new objects in the last {LOOKBACK_HOURS} hours of {firehose.hour_prefix(now)}")
        return dg.SensorResult(run_requests=requests, cursor=json.dumps(seen))

    return recommendations_sensor
