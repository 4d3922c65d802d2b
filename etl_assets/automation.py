"""Jobs and schedules."""

import dagster as dg

from etl_assets.partitions import DAILY

DAILY_ASSETS = dg.AssetSelection.groups("staging", "marts")

daily_job = dg.define_asset_job(
    "daily_batch",
    selection=DAILY_ASSETS,
    partitions_def=DAILY,
    description="The daily batch pipeline: CRM customers and lake orders to the daily marts.",
)

# Runs shortly after midnight UTC for the day that just ended (the schedule's partition).
daily_schedule = dg.build_schedule_from_partitioned_job(daily_job, hour_of_day=1, minute_of_hour=0)
