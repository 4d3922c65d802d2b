"""Events: JSON lines parsed with an explicit schema, validated, de-duplicated and enriched."""

from __future__ import annotations

import io
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from etl_assets.contracts import EVENT_LINES, EVENTS, EVENTS_REJECTS, HOURLY_USER_METRICS, UTC_TS, conform
from etl_assets.contracts.validation import CODES, first_code, judge_rows, repeated, rule_hits
from etl_assets.transforms.common import first_row_of_each_group, round_to

# What one landing line is parsed as: the landing contract's columns, any of them possibly absent.
LINE_SCHEMA = pa.schema([f.with_nullable(True) for f in EVENT_LINES.schema])
REASON = "reject_reason"
FAILED = "failed_rules"
MALFORMED = "malformed_json"
ORIGIN = "__origin"  # "new" for this load's lines, "loaded" for event ids already in the table
DUPLICATE_IN_LOAD = "duplicate_in_load"
ALREADY_LOADED = "already_loaded"
# Materialization metadata keys: the duplicates a batch's load dropped (read by the accounting
# checks), and the dict by batch over the run's batches that materializations carried before them.
DUPLICATES_DROPPED = ("duplicates_in_load", "duplicates_already_loaded")
LEGACY_DUPLICATES_PER_BATCH = "duplicates_per_batch"


def _parse_lines_one_by_one(lines: list[str]) -> tuple[pa.Table, np.ndarray]:
    """Slow path for a file whose candidate lines fail the vectorized parse: parse each line."""
    rows, ok = [], np.zeros(len(lines), dtype=bool)
    for i, line in enumerate(lines):
        try:
            value = json.loads(line)
            row = {f.name: value.get(f.name) for f in LINE_SCHEMA}
            pa.Table.from_pylist([row], schema=LINE_SCHEMA)
        except (ValueError, TypeError, AttributeError, pa.ArrowException):
            continue
        rows.append(row)
        ok[i] = True
    return pa.Table.from_pylist(rows, schema=LINE_SCHEMA), ok


def parse_event_file(text: str, source_file: str, batch_id: str) -> pa.Table:
    """Every line of one landing file, parsed: event columns, or a ``reject_reason`` for the line.

    Lines that are not a JSON object of the expected types are ``malformed_json``. Blank lines
    are skipped. Valid JSON goes through one vectorized Arrow parse; only a file whose lines defeat
    that parse falls back to parsing line by line.
    """
    raw = text.split("\n")
    numbers = np.arange(1, len(raw) + 1, dtype=np.int64)
    lines = pa.array(raw, pa.string())
    stripped = pc.utf8_trim_whitespace(lines)
    keep = pc.not_equal(stripped, "")
    lines, stripped, numbers = (
        lines.filter(keep),
        stripped.filter(keep),
        numbers[keep.to_numpy(zero_copy_only=False)],
    )
    shaped = pc.and_(pc.starts_with(stripped, "{"), pc.ends_with(stripped, "}")).to_numpy(
        zero_copy_only=False
    )
    candidates = stripped.filter(pa.array(shaped)).to_pylist()
    try:
        payload = ("\n".join(candidates) + "\n").encode()
        parsed = pajson.read_json(
            io.BytesIO(payload),
            parse_options=pajson.ParseOptions(
                explicit_schema=LINE_SCHEMA, unexpected_field_behavior="ignore"
            ),
        )
        ok = np.ones(len(candidates), dtype=bool)
    except pa.ArrowException:
        parsed, ok = _parse_lines_one_by_one(candidates)
    parsed_mask = np.zeros(len(lines), dtype=bool)
    parsed_mask[np.flatnonzero(shaped)[ok]] = True

    n = len(lines)
    columns = {}
    for field in LINE_SCHEMA:
        full = pa.nulls(n, field.type)
        if parsed.num_rows:
            index = np.full(n, -1)
            index[parsed_mask] = np.arange(parsed.num_rows)
            full = parsed.column(field.name).take(pa.array(index, mask=~parsed_mask))
        columns[field.name] = full
    table = pa.table(
        {
            **columns,
            "raw_line": lines,
            "source_file": repeated(source_file, n, pa.string()),
            "line_number": pa.array(numbers, pa.int64()),
            "batch_id": repeated(batch_id, n, pa.string()),
        }
    )
    # Lines that parsed are judged against the landing contract; the others are malformed.
    verdicts = judge_rows(conform(table, EVENT_LINES, nulls_allowed=True), EVENT_LINES)
    malformed = pa.repeat(pa.scalar([MALFORMED], CODES), n)
    failed = pc.if_else(pa.array(parsed_mask), verdicts.rejecting, malformed)
    return table.append_column(REASON, first_code(failed)).append_column(FAILED, failed)


def enrich_events(table: pa.Table) -> pa.Table:
    """Valid parsed lines -> ``events`` rows: UTC timestamp, event hour, day of week, weekend flag."""
    text = pc.replace_substring_regex(table.column("timestamp"), r"(Z|\+00:00)$", "")
    ts = pc.cast(pc.cast(text, pa.timestamp("us")), UTC_TS)
    hour = pc.floor_temporal(ts, unit="hour")
    dow = pc.cast(pc.day_of_week(ts, count_from_zero=True, week_start=1), pa.int8())
    out = table.set_column(table.schema.get_field_index("timestamp"), "timestamp", ts)
    out = out.append_column("event_hour", hour).append_column("day_of_week", dow)
    out = out.append_column("is_weekend", pc.greater_equal(dow, 5))
    return conform(out, EVENTS)


PARSED_SCHEMA = pa.schema(
    [
        *LINE_SCHEMA,
        ("raw_line", pa.string()),
        ("source_file", pa.string()),
        ("line_number", pa.int64()),
        ("batch_id", pa.string()),
        (REASON, pa.string()),
        (FAILED, CODES),
        (ORIGIN, pa.string()),
    ]
)


def mark_new_lines(parsed: pa.Table) -> pa.Table:
    """``parse_event_file`` output tagged as this load's lines."""
    return parsed.append_column(ORIGIN, repeated("new", parsed.num_rows, pa.string())).cast(PARSED_SCHEMA)


def distinct_event_ids(lines: pa.Table) -> pa.Table:
    """The distinct ``event_id`` values of parsed lines, valid or not: what a load looks for among
    the events already loaded (a superset of the valid lines' ids is enough to find every one)."""
    return pa.table({"event_id": pc.unique(lines.column("event_id").drop_null().cast(pa.string()))})


def as_value_set(ids: pa.Table) -> pa.Array:
    """``distinct_event_ids`` of every block of a load, as one set to look ids up in."""
    return pc.unique(ids.column("event_id"))


def ids_among(event_ids: pa.Table, wanted: pa.Array) -> pa.Table:
    """The rows of loaded ``event_ids`` that are among ``wanted``: the only loaded ids a load's
    de-duplication can use, so the others need not travel to it."""
    return event_ids.filter(pc.is_in(event_ids.column("event_id").cast(pa.string()), value_set=wanted))


def mark_loaded_ids(event_ids: pa.Table) -> pa.Table:
    """Event ids already in the table (from other batches), shaped like parsed lines for a union."""
    n = event_ids.num_rows
    columns = {f.name: pa.nulls(n, f.type) for f in PARSED_SCHEMA}
    columns["event_id"] = event_ids.column("event_id").cast(pa.string())
    columns[ORIGIN] = repeated("loaded", n, pa.string())
    return pa.table(columns, schema=PARSED_SCHEMA)


def drop_duplicate_events(block: pa.Table) -> pa.Table:
    """Mark re-delivered events in a block co-located by ``event_id``.

    ``block`` holds this load's parsed lines (``__origin`` = "new") and ids already in the table
    ("loaded"). A valid new line is ``already_loaded`` when its id is in the table, and
    ``duplicate_in_load`` when an earlier line (by file, then line number) of this load has it.
    The loaded-id rows are dropped.
    """
    new = block.filter(pc.equal(block.column(ORIGIN), "new")).drop_columns([ORIGIN])
    loaded = block.filter(pc.equal(block.column(ORIGIN), "loaded")).column("event_id")
    new = new.sort_by([("source_file", "ascending"), ("line_number", "ascending")])
    valid = pc.is_null(new.column(REASON))
    candidates = new.filter(valid)
    first = np.zeros(new.num_rows, dtype=bool)
    first[
        np.flatnonzero(valid.to_numpy(zero_copy_only=False))[
            first_row_of_each_group(candidates, ["event_id"])
        ]
    ] = True
    in_table = pc.and_(valid, pc.is_in(new.column("event_id"), value_set=pc.unique(loaded)))
    reason = new.column(REASON)
    reason = pc.if_else(pc.and_(valid, pc.invert(pa.array(first))), pa.scalar(DUPLICATE_IN_LOAD), reason)
    reason = pc.if_else(in_table, pa.scalar(ALREADY_LOADED), reason)
    return new.set_column(new.schema.get_field_index(REASON), REASON, reason)


def split_events(block: pa.Table, run_id: str) -> dict[str, pa.Table]:
    """Marked lines -> rows for ``events`` and ``events_rejects``, the dropped duplicates, and one
    counted row per rule broken (``rule:<code>``)."""
    reason = block.column(REASON)
    valid = pc.is_null(reason)
    duplicate = pc.fill_null(pc.is_in(reason, value_set=pa.array([DUPLICATE_IN_LOAD, ALREADY_LOADED])), False)
    rejected = pc.and_(pc.invert(valid), pc.invert(duplicate))
    dupes = block.filter(duplicate)
    return {
        EVENTS.name: enrich_events(block.filter(valid))
        if pc.any(valid).as_py()
        else EVENTS.schema.empty_table(),
        EVENTS_REJECTS.name: conform(
            block.filter(rejected).append_column(
                "run_id", repeated(run_id, int(pc.sum(rejected).as_py() or 0), pa.string())
            ),
            EVENTS_REJECTS,
        ),
        **rule_hits(
            block.column(FAILED).filter(rejected), block.column("batch_id").filter(rejected), "batch_id"
        ),
        DUPLICATE_IN_LOAD: dupes.filter(pc.equal(dupes.column(REASON), DUPLICATE_IN_LOAD)).select(
            ["batch_id"]
        ),
        ALREADY_LOADED: dupes.filter(pc.equal(dupes.column(REASON), ALREADY_LOADED)).select(["batch_id"]),
    }


def partial_hourly_metrics(events: pa.Table) -> pa.Table:
    """Per-block counts and sums per (event_hour, user_id)."""
    grouped = events.group_by(["event_hour", "user_id"], use_threads=False).aggregate(
        [("session_duration", "sum"), ("session_duration", "count")]
    )
    return grouped.rename_columns(["event_hour", "user_id", "total_session_duration", "event_count"])


def combine_hourly_metrics(partials: pa.Table) -> pa.Table:
    """Partials co-located by user -> final rows. Totals are rounded to the microsecond so the
    result does not depend on the order in which blocks were summed."""
    combined = partials.group_by(["event_hour", "user_id"], use_threads=False).aggregate(
        [("total_session_duration", "sum"), ("event_count", "sum")]
    )
    total = round_to(combined.column("total_session_duration_sum"), 6)
    count = pc.cast(combined.column("event_count_sum"), pa.int64())
    table = pa.table(
        {
            "event_hour": combined.column("event_hour"),
            "user_id": combined.column("user_id"),
            "event_count": count,
            "total_session_duration": total,
            "avg_session_duration": pc.divide(total, pc.cast(count, pa.float64())),
        }
    )
    return conform(
        table.sort_by([("event_hour", "ascending"), ("user_id", "ascending")]), HOURLY_USER_METRICS
    )
