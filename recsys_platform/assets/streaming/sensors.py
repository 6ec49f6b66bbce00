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


def build_recommendations_sensor(hourly: dg.HourlyPartitionsDefinition) -> dg.SensorDefinition:
    first_hour = hourly.start.astimezone(dt.timezone.utc)

    @dg.sensor(job=recommendations_job, minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING,
               description=f"Lists the recommendations bucket hour by hour over the last {LOOKBACK_HOURS} hours "
               "(never the whole bucket) and requests the hour's `recommendations` partition when its set of "
               "objects changed; run keys come from the objects seen, so a rerun of a tick is deduplicated. "
               "Hours before RECSYS_STREAM_START are not partitions and are left alone.")
    def recommendations_sensor(context: dg.SensorEvaluationContext, recommendations_store: ObjectStoreResource):
        cursor = json.loads(context.cursor) if context.cursor else {}
        now = dt.datetime.now(dt.timezone.utc)
        requests, seen = [], {}
        for back in range(LOOKBACK_HOURS, -1, -1):
            hour = (now - dt.timedelta(hours=back)).replace(minute=0, second=0, microsecond=0)
            if hour < first_hour:
                continue
            ok, failed = hour_keys(recommendations_store.store, hour)
            if not ok and not failed:
                continue
            digest = hashlib.sha1("\n".join(ok + failed).encode()).hexdigest()[:16]
            key = hour.strftime("%Y-%m-%d-%H:00")
            seen[key] = digest
            if cursor.get(key) != digest:
                requests.append(dg.RunRequest(run_key=f"{key}:{digest}", partition_key=key,
                                              tags={"recsys/objects": str(len(ok) + len(failed))}))
        if not requests:
            return dg.SkipReason(f"no new objects in the last {LOOKBACK_HOURS} hours of {firehose.hour_prefix(now)}")
        return dg.SensorResult(run_requests=requests, cursor=json.dumps(seen))

    return recommendations_sensor
