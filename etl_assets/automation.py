"""Jobs, schedules and sensors."""

import json

import dagster as dg

from etl_assets.partitions import DAILY, EVENT_BATCHES
from etl_assets.resources import SourcesResource
from etl_assets.sources.landing import ready_batches

DAILY_ASSETS = dg.AssetSelection.groups("staging", "marts") - dg.AssetSelection.assets(
    "events", "events_rejects", "hourly_user_metrics", "transactions"
)

daily_job = dg.define_asset_job(
    "daily_batch",
    selection=DAILY_ASSETS,
    partitions_def=DAILY,
    description="The daily batch pipeline: CRM customers and lake orders to the daily marts.",
)

# Runs shortly after midnight UTC for the day that just ended (the schedule's partition).
daily_schedule = dg.build_schedule_from_partitioned_job(daily_job, hour_of_day=1, minute_of_hour=0)

events_job = dg.define_asset_job(
    "events_batch",
    selection=dg.AssetSelection.assets("events", "events_rejects", "hourly_user_metrics"),
    partitions_def=EVENT_BATCHES,
    description="Load one landing batch of events and update the hourly metrics it touches.",
)


transactions_job = dg.define_asset_job(
    "transactions_cdc",
    selection=dg.AssetSelection.assets("transactions"),
    description="Pick up CRM transaction changes past the watermark and merge them.",
)

# Off until turned on in the UI (Automation); the job can always be launched by hand.
transactions_schedule = dg.ScheduleDefinition(
    job=transactions_job,
    cron_schedule="*/15 * * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.STOPPED,
)


@dg.sensor(job=events_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def events_landing_sensor(context: dg.SensorEvaluationContext, sources: SourcesResource) -> dg.SensorResult:
    """Watches `landing/events/` and, for each new batch folder, registers it as a partition of
    `event_batches` and requests one run of `events_batch` for it. The cursor holds the batches
    already seen, and each run request is keyed by its batch id, so no batch is loaded twice by
    the sensor. Folders named `.*` or `_*` are batches still being written."""
    seen = set(json.loads(context.cursor)) if context.cursor else set()
    registered = set(context.instance.get_dynamic_partitions(EVENT_BATCHES.name))
    new = [b for b in ready_batches(sources.events_landing_dir) if b not in seen and b not in registered]
    if not new:
        return dg.SensorResult(skip_reason="no new batch in the landing zone")
    return dg.SensorResult(
        run_requests=[dg.RunRequest(run_key=b, partition_key=b) for b in new],
        dynamic_partitions_requests=[EVENT_BATCHES.build_add_request(new)],
        cursor=json.dumps(sorted(seen | set(new))),
    )
