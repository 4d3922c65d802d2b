"""Partitions of the daily tables, and the day windows a run covers."""

from __future__ import annotations

from datetime import date, timedelta

import dagster as dg

FIRST_DAY = "2024-01-01"

DAILY = dg.DailyPartitionsDefinition(start_date=FIRST_DAY, timezone="UTC")

# A backfill of any range runs as one Dagster run, and so as one Ray job per asset.
SINGLE_RUN = dg.BackfillPolicy.single_run()


def window_days(
    context: dg.AssetExecutionContext | dg.AssetCheckExecutionContext,
) -> list[date]:
    """Every UTC day of the run's partition window (one day, or a backfill's whole range)."""
    window = context.partition_time_window
    first, end = window.start.date(), window.end.date()
    return [first + timedelta(days=i) for i in range((end - first).days)]


# One partition per landing batch of events, registered by the landing-zone sensor.
EVENT_BATCHES = dg.DynamicPartitionsDefinition(name="event_batches")
