"""Events: landing batches parsed into `events` and `events_rejects`, and hourly user metrics."""

from collections.abc import Iterator
from functools import partial

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
import ray.data

from etl_assets.assets.common import RAY_KINDS, RAY_POOL, RAY_RETRY, source_failures
from etl_assets.assets.metadata import (
    definition_metadata,
    materialize_result,
    materialize_results,
    rule_failures_by_partition,
    same_columns,
)
from etl_assets.assets.sources import events_landing
from etl_assets.contracts import EVENTS, EVENTS_REJECTS, HOURLY_USER_METRICS
from etl_assets.partitions import EVENT_BATCHES, SINGLE_RUN
from etl_assets.ray_steps import BUCKET_ROWS, co_locate, join_stored, map_blocks, stored, timed
from etl_assets.resources import RayResource, SourcesResource, WarehouseResource
from etl_assets.sources.landing import LandingFile, batch_files, read_event_files
from etl_assets.transforms.events import (
    ALREADY_LOADED,
    DUPLICATE_IN_LOAD,
    DUPLICATES_DROPPED,
    LINE_SCHEMA,
    as_value_set,
    combine_hourly_metrics,
    distinct_event_ids,
    drop_duplicate_events,
    ids_among,
    mark_loaded_ids,
    partial_hourly_metrics,
    split_events,
)
from etl_assets.warehouse.base import Warehouse

BATCH_ASSET = {
    "partitions_def": EVENT_BATCHES,
    "backfill_policy": SINGLE_RUN,
    "retry_policy": RAY_RETRY,
    "pool": RAY_POOL,
}

EVENTS_LINEAGE = {
    **same_columns("events_landing", LINE_SCHEMA.names),
    "event_hour": [("events_landing", "timestamp")],
    "day_of_week": [("events_landing", "timestamp")],
    "is_weekend": [("events_landing", "timestamp")],
}
REJECTS_LINEAGE = {"raw_line": [("events_landing", name) for name in LINE_SCHEMA.names]}
HOURLY_LINEAGE = {
    "event_hour": [("events", "event_hour")],
    "user_id": [("events", "user_id")],
    "event_count": [("events", "event_id")],
    "total_session_duration": [("events", "session_duration")],
    "avg_session_duration": [("events", "session_duration")],
}


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "events",
            deps=[events_landing],
            group_name="staging",
            kinds=RAY_KINDS,
            description="Events of each landing batch, parsed with an explicit schema, de-duplicated by "
            "`event_id` across all batches loaded (an event re-delivered later is kept once), and "
            "enriched with `event_hour` (UTC, truncated), `day_of_week` (0 = Monday) and `is_weekend`.",
            metadata=definition_metadata(EVENTS, EVENTS_LINEAGE),
        ),
        dg.AssetSpec(
            "events_rejects",
            deps=[events_landing],
            group_name="staging",
            kinds=RAY_KINDS,
            description="Landing lines that could not be loaded, with their file, line number, the raw "
            "line, `reject_reason` (`malformed_json`, or the first rule of the landing contract "
            "broken, such as `timestamp.str_matches`), `failed_rules` and the `run_id`.",
            metadata=definition_metadata(EVENTS_REJECTS, REJECTS_LINEAGE),
        ),
    ],
    **BATCH_ASSET,
)
def events_and_rejects(
    context: dg.AssetExecutionContext,
    ray_cluster: RayResource,
    sources: SourcesResource,
    warehouse: WarehouseResource,
) -> Iterator[dg.MaterializeResult]:
    """Parse every file of the run's batches (one Ray task per file), drop events already loaded
    from other batches (only the loaded ids among the run's own are read on to that comparison),
    and replace the batches' partitions of `events` and `events_rejects`."""
    batch_ids = context.partition_keys
    backend = warehouse.backend()
    with source_failures(), timed() as timer:
        files = batch_files(sources.events_landing_dir, batch_ids)
        lines = [read_event_files(files)]
        others = [b for b in backend.partitions(EVENTS) if b not in set(batch_ids)]
        if others:
            lines.append(map_blocks(loaded_ids_to_compare(backend, others, files), mark_loaded_ids))
        marked = co_locate(lines, "event_id", drop_duplicate_events)
        written = backend.replace_partitions(
            marked, [EVENTS, EVENTS_REJECTS], batch_ids, route=partial(split_events, run_id=context.run_id)
        )
    rules = rule_failures_by_partition(written, list(batch_ids))
    per_batch = {}
    for batch in batch_ids:
        good = written.tables[EVENTS.name].rows_per_day.get(batch, 0)
        bad = written.tables[EVENTS_REJECTS.name].rows_per_day.get(batch, 0)
        in_load, already = (
            written.other_counts_per_partition.get(kind, {}).get(batch, 0)
            for kind in (DUPLICATE_IN_LOAD, ALREADY_LOADED)
        )
        lines_in = good + bad + in_load + already
        per_batch[batch] = {
            "lines_in": lines_in,
            "rows_loaded": good,
            "rows_rejected": bad,
            **dict(zip(DUPLICATES_DROPPED, (in_load, already), strict=True)),
            "reject_rate": round(bad / lines_in, 6) if lines_in else 0.0,
            **rules[batch],
        }
    lines_in = sum(m["lines_in"] for m in per_batch.values())
    tables = [(EVENTS, EVENTS_LINEAGE), (EVENTS_REJECTS, REJECTS_LINEAGE)]
    yield from materialize_results(context, written, timer, tables, lines_in, per_batch)


# The most ids a load broadcasts to the reads of the loaded ids (about 40 MiB of them, prepared once
# in each worker); beyond it, every loaded id meets the load's lines in the exchange.
BROADCAST_IDS_MOST = BUCKET_ROWS


def loaded_ids_to_compare(
    backend: Warehouse, others: list[str], files: list[LandingFile]
) -> ray.data.Dataset:
    """The ids of the ``others`` batches' events that the load's lines may repeat.

    Only those can mark a line as already loaded; sending every loaded id through the exchange
    made a batch's load grow with the whole table (4.9 s at 56 days of two 50,000-event batches,
    against 1.8 s now: benchmarks/results/event_dedup.json). The load's files are parsed once
    first for their distinct ids, which stay in the object store, and each read task keeps the
    loaded ids among them. A load of more than ``BROADCAST_IDS_MOST`` ids (distinct within each
    file, summed over its files) compares every loaded id in the exchange instead, its first parse
    spent for that count."""
    loaded = backend.read(EVENTS, others, ["event_id"])
    refs, ids = stored(map_blocks(read_event_files(files), distinct_event_ids))
    if ids > BROADCAST_IDS_MOST:
        return loaded
    return join_stored(loaded, refs, pa.schema([("event_id", pa.string())]), as_value_set, ids_among)


@dg.asset(
    deps=["events"],
    group_name="marts",
    kinds=RAY_KINDS,
    metadata=definition_metadata(HOURLY_USER_METRICS, HOURLY_LINEAGE),
    **BATCH_ASSET,
)
def hourly_user_metrics(
    context: dg.AssetExecutionContext, ray_cluster: RayResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """Per `event_hour, user_id`: `event_count`, `total_session_duration`, `avg_session_duration`
    over all events loaded so far. A batch's run recomputes the hours its events touch from every
    event of those hours in `events` (files whose hour range holds none of them are not read)
    and replaces those hours' rows with them in one commit (on Delta, only files that hold them
    are rewritten, a file per day), so the table equals the full aggregate whatever order batches
    arrive in."""
    backend = warehouse.backend()
    touched: set = set()
    for batch in backend.scan(EVENTS, context.partition_keys, ["event_hour"]):
        touched.update(pc.unique(batch.column("event_hour")).to_pylist())
    hours = sorted(touched)
    if not hours:
        context.log.info("the batches hold no events: nothing to update")
        return dg.MaterializeResult(
            metadata={
                **definition_metadata(HOURLY_USER_METRICS, HOURLY_LINEAGE),
                "hours_touched": 0,
                "rows_written": 0,
                "dagster/partition_row_count": 0,
                "dagster/row_count": backend.row_count(HOURLY_USER_METRICS),
                "dagster/uri": backend.location(HOURLY_USER_METRICS),
            }
        )
    with source_failures(), timed() as timer:
        # Only the touched hours' events: Delta skips every file whose recorded hour range
        # holds none of them (files written before files recorded it are all read).
        in_hours = backend.read(
            EVENTS, columns=["event_hour", "user_id", "session_duration"], where_in=("event_hour", hours)
        )
        metrics = co_locate(map_blocks(in_hours, partial_hourly_metrics), "user_id", combine_hourly_metrics)
        result = backend.replace_where(metrics, HOURLY_USER_METRICS, "event_hour", hours)
    return materialize_result(
        context, HOURLY_USER_METRICS, result, timer, HOURLY_LINEAGE, hours_touched=len(hours)
    )
