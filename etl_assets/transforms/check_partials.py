"""The checks' work on one block of stored rows, run in Ray tasks (or, for a small window, in the
driver): each returns a small table of counts, sums and samples, which the check combines, so a
big window's rows never reach the driver.

The tallies and sums have a ``value`` column: the row's partition value as text (null for a table
that is not partitioned, or a check over the whole table).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from datetime import date
from decimal import Decimal

import pyarrow as pa
import pyarrow.compute as pc

from etl_assets.contracts import TableContract, conform
from etl_assets.contracts.validation import judge_rows

SAMPLE_ROWS = 3


def jsonable(row: dict) -> dict:
    """A row as JSON metadata takes it: dates and times as ISO text, decimals as text."""

    def plain(value):
        if isinstance(value, date):
            return value.isoformat()
        if isinstance(value, Decimal):
            return str(value)
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        return value

    return {k: plain(v) for k, v in row.items()}


def partition_text(table: pa.Table, column: str | None) -> pa.ChunkedArray | pa.Array:
    """Each row's partition value as text; nulls when there is no partition column."""
    if column is None:
        return pa.nulls(table.num_rows, pa.string())
    return table.column(column).cast(pa.string())


RULE_TALLY = pa.schema(
    [
        ("value", pa.string()),
        # Null: the row holds the number of rows checked, not a rule's failures.
        ("code", pa.string()),
        ("rows", pa.int64()),
        # Up to SAMPLE_ROWS failing rows, each as JSON text.
        ("samples", pa.list_(pa.string())),
    ]
)


def rule_tally(block: pa.Table, contract: TableContract, column: str | None) -> pa.Table:
    """Rows checked per partition, and per partition and rule (all but the key's, which the key
    check judges) the failing rows and a few of them."""
    block = conform(block, contract, nulls_allowed=True)
    spelled = partition_text(block, column)
    counted = (
        pa.table({"value": spelled}).group_by(["value"], use_threads=False).aggregate([([], "count_all")])
    )
    rows = [
        {"value": value, "code": None, "rows": count, "samples": []}
        for value, count in zip(counted.column("value").to_pylist(), counted.column("count_all").to_pylist())
    ]
    verdicts = judge_rows(block, contract, judge_key=False)
    for codes in (verdicts.rejecting, verdicts.soft):
        parents = pc.list_parent_indices(codes)
        if len(parents) == 0:
            continue
        hits = pa.table({"value": spelled.take(parents), "code": pc.list_flatten(codes), "row": parents})
        grouped = hits.group_by(["value", "code"], use_threads=False).aggregate([("row", "list")])
        for value, code, failing in zip(
            *(grouped.column(c).to_pylist() for c in ("value", "code", "row_list"))
        ):
            samples = [
                json.dumps(jsonable(block.slice(row, 1).to_pylist()[0])) for row in failing[:SAMPLE_ROWS]
            ]
            rows.append({"value": value, "code": code, "rows": len(failing), "samples": samples})
    return pa.Table.from_pylist(rows, schema=RULE_TALLY)


def duplicated_keys(table: pa.Table, keys: Sequence[str]) -> pa.Table:
    """Key values that occur more than once, with how often (``count_all``)."""
    counts = table.group_by(list(keys), use_threads=False).aggregate([([], "count_all")])
    return counts.filter(pc.greater(counts.column("count_all"), 1))


KEY_SAMPLE_ROWS = 5
KEY_TALLY = pa.schema([("value", pa.string()), ("repeated", pa.int64()), ("samples", pa.list_(pa.string()))])


def key_tally(table: pa.Table, keys: Sequence[str], column: str | None) -> pa.Table:
    """Per partition value of ``column`` (or over all of ``table``): how many ``keys`` occur more
    than once, and the first ``KEY_SAMPLE_ROWS`` of them by key (as JSON: the keys and
    ``count_all``). ``table`` must hold every row of each key it holds."""
    grouped = list(dict.fromkeys([*keys, *([column] if column else [])]))
    dupes = duplicated_keys(table, grouped).sort_by([(k, "ascending") for k in keys])
    spelled = partition_text(dupes, column)
    shown = [*keys, "count_all"]
    rows = []
    for value in pc.unique(spelled).to_pylist():
        of_value = dupes.filter(pc.equal(spelled, value)) if column else dupes
        samples = [
            json.dumps(jsonable(r)) for r in of_value.select(shown).slice(0, KEY_SAMPLE_ROWS).to_pylist()
        ]
        rows.append({"value": value, "repeated": of_value.num_rows, "samples": samples})
    return pa.Table.from_pylist(rows, schema=KEY_TALLY)


def key_order(keys: Sequence[str]) -> Callable[[str], tuple]:
    """The order of ``key_tally``'s samples (by key, nulls last), for ``merged``."""

    def order(sample: str) -> tuple:
        row = json.loads(sample)
        return tuple((row[k] is None, row[k]) for k in keys)

    return order


def merged(
    parts: Iterable[pa.Table], by: Sequence[str], keep: int = 0, order: Callable[[str], object] | None = None
) -> list[dict]:
    """Partial results added up per value of the ``by`` columns, whatever block they came from: the
    other columns summed, and the ``samples`` lists merged, keeping the ``keep`` first by ``order``
    (the text by default), so the order blocks come back in does not change the sample."""
    held: dict[tuple, dict] = {}
    for part in parts:
        for row in part.to_pylist():
            group = held.setdefault(tuple(row[c] for c in by), {c: row[c] for c in by})
            for name, value in row.items():
                if name == "samples":
                    group[name] = sorted([*group.get(name, []), *value], key=order)[:keep]
                elif name not in by:
                    group[name] = group.get(name, 0) + (value or 0)
    return list(held.values())


def partition_sums(block: pa.Table, column: str, summed: Sequence[str]) -> pa.Table:
    """Per value of ``column`` as text (``value``: a partition's, or a status'): its rows
    (``rows``) and the sum of each ``summed`` column (``<name>_sum``)."""
    table = pa.table({"value": partition_text(block, column), **{c: block.column(c) for c in summed}})
    aggregates = [([], "count_all"), *((c, "sum") for c in summed)]
    sums = table.group_by(["value"], use_threads=False).aggregate(aggregates)
    return sums.rename_columns([{"count_all": "rows"}.get(n, n) for n in sums.column_names])


ORPHAN_SAMPLE_ROWS = 5
ORPHAN_TALLY = pa.schema(
    [
        ("value", pa.string()),
        ("orders", pa.int64()),
        ("orphans", pa.int64()),
        ("samples", pa.list_(pa.string())),
    ]
)


def orphan_tally(block: pa.Table, column: str, sample_columns: Sequence[str]) -> pa.Table:
    """Per partition: orders, orphan orders (``is_orphan``) and a few orphans' ``sample_columns``."""
    spelled = partition_text(block, column)
    rows = []
    for value in pc.unique(spelled).to_pylist():
        of_value = block.filter(pc.equal(spelled, value))
        orphans = of_value.filter(of_value.column("is_orphan"))
        samples = [
            json.dumps(jsonable(r))
            for r in orphans.select(list(sample_columns)).slice(0, ORPHAN_SAMPLE_ROWS).to_pylist()
        ]
        rows.append(
            {"value": value, "orders": of_value.num_rows, "orphans": orphans.num_rows, "samples": samples}
        )
    return pa.Table.from_pylist(rows, schema=ORPHAN_TALLY)


VERSION_SAMPLE_ROWS = 5
VERSION_TALLY = pa.schema(
    [
        ("entities", pa.int64()),
        ("current_rows", pa.int64()),
        ("without_current", pa.int64()),
        ("several_current", pa.int64()),
        ("open_not_current", pa.int64()),
        # Entities whose count of current versions is not one, as JSON text.
        ("samples", pa.list_(pa.string())),
    ]
)


def current_versions_tally(table: pa.Table, key: str) -> pa.Table:
    """One row of counts over an SCD2 table's versions (``key``, ``is_current``, ``valid_to``):
    entities, current rows, entities with no current version or several, open rows (no
    ``valid_to``) not marked current, and the first ``VERSION_SAMPLE_ROWS`` wrong entities by key.
    A null ``is_current`` (which the contract forbids) counts as not current. ``table`` must hold
    every version of each entity it holds."""
    current = pc.fill_null(table.column("is_current"), False)
    per_key = (
        pa.table({key: table.column(key), "current": pc.cast(current, pa.int64())})
        .group_by([key], use_threads=False)
        .aggregate([("current", "sum")])
    )
    versions = per_key.column("current_sum")
    wrong = per_key.filter(pc.not_equal(versions, 1)).sort_by([(key, "ascending")])
    samples = [
        json.dumps(jsonable({key: row[key], "current_versions": row["current_sum"]}))
        for row in wrong.slice(0, VERSION_SAMPLE_ROWS).to_pylist()
    ]
    open_rows = pc.is_null(table.column("valid_to"))
    row = {
        "entities": per_key.num_rows,
        "current_rows": pc.sum(pc.cast(current, pa.int64())).as_py() or 0,
        "without_current": pc.sum(pc.equal(versions, 0)).as_py() or 0,
        "several_current": pc.sum(pc.greater(versions, 1)).as_py() or 0,
        "open_not_current": pc.sum(pc.and_(open_rows, pc.invert(current))).as_py() or 0,
        "samples": samples,
    }
    return pa.Table.from_pylist([row], schema=VERSION_TALLY)
