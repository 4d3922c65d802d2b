"""What every backend's Ray writer does to a block before it stores it.

A block is split among the target tables (``route``), each part is held to its table's contract,
and its partition values are checked against the partitions being replaced. Outputs that are not
tables (such as collapsed duplicates) are only counted. Workers return a small manifest of what they
stored (a row per table and partition value, or per file for Delta); only that reaches the driver.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import pyarrow as pa
import pyarrow.compute as pc

from etl_assets.contracts import TableContract
from etl_assets.contracts.validation import enforce
from etl_assets.warehouse.base import ReplaceResult, Router, WriteResult

MANIFEST_SCHEMA = pa.schema(
    [
        ("table", pa.string()),
        ("path", pa.string()),
        ("partition_column", pa.string()),
        ("partition_value", pa.string()),
        ("size", pa.int64()),
        ("num_records", pa.int64()),
        ("stats", pa.string()),
    ]
)


@dataclass
class RoutedBlock:
    """One block split among its targets: each table's rows, already held to its contract."""

    tables: dict[str, tuple[TableContract, pa.Table]] = field(default_factory=dict)
    # Manifest rows of outputs that are only counted.
    counted: list[dict] = field(default_factory=list)


def route_block(
    block: pa.Table,
    targets: Mapping[str, TableContract],
    allowed: frozenset[str] | None,
    route: Router | None,
) -> RoutedBlock:
    """Split, enforce and check one block (see the module docstring)."""
    outputs = route(block) if route else {next(iter(targets)): block}
    routed = RoutedBlock()
    for name, table in outputs.items():
        contract = targets.get(name)
        if contract is None:
            routed.counted += count_rows(name, table, next(iter(targets.values())).partition_column)
            continue
        table = enforce(table, contract)
        if table.num_rows == 0:
            continue
        if contract.partition_column is not None and allowed is not None:
            values = pc.unique(table.column(contract.partition_column).cast(pa.string())).to_pylist()
            outside = sorted(set(values) - allowed)
            if outside:
                raise ValueError(
                    f"{name}: rows for {', '.join(outside)} fall outside the partitions being replaced"
                )
        routed.tables[name] = (contract, table)
    return routed


def partition_groups(table: pa.Table, column: str | None) -> list[tuple[str | None, pa.Table]]:
    """The table's rows per partition value (spelled as a string), each group in its rows' order;
    one group when unpartitioned. A stable sort by the value, then a slice per value: one pass over
    the rows, where a filter per value would pass over all of them once per value."""
    if column is None:
        return [(None, table)]
    if table.num_rows == 0:
        return []
    runs = pc.run_end_encode(table.column(column).combine_chunks())
    if len(runs.run_ends) > 1:  # the usual block holds one day: nothing to sort
        table = table.take(pc.sort_indices(table, sort_keys=[(column, "ascending")]))
        runs = pc.run_end_encode(table.column(column).combine_chunks())
    groups, start = [], 0
    for value, end in zip(runs.values.cast(pa.string()).to_pylist(), runs.run_ends.to_pylist(), strict=True):
        groups.append((value, table.slice(start, end - start)))
        start = end
    return groups


def count_rows(name: str, table: pa.Table, column: str | None) -> list[dict]:
    """Manifest rows that count an output per partition value where it has the column."""
    if column is None or column not in table.column_names or table.num_rows == 0:
        return [{"table": name, "num_records": table.num_rows}]
    counts = table.group_by([column]).aggregate([([], "count_all")])
    return [
        {"table": name, "partition_column": column, "partition_value": value, "num_records": n}
        for value, n in zip(
            counts.column(column).cast(pa.string()).to_pylist(), counts.column("count_all").to_pylist()
        )
    ]


def collect_manifests(batches: Iterable[pa.Table]) -> dict[str, list[dict]]:
    """The manifest rows the workers returned, per table."""
    manifests: dict[str, list[dict]] = defaultdict(list)
    for batch in batches:
        for row in batch.to_pylist():
            manifests[row["table"]].append(row)
    return manifests


def rows_per_partition(rows: Sequence[dict], partitions: Sequence[str] | None) -> dict[str, int]:
    """Rows written per partition value, with 0 for a replaced partition that received none."""
    per_value: Counter[str] = Counter({p: 0 for p in partitions or []})
    for row in rows:
        if row.get("partition_value") is not None:
            per_value[row["partition_value"]] += row["num_records"]
    return dict(sorted(per_value.items()))


def replace_result(results: Mapping[str, WriteResult], manifests: Mapping[str, list[dict]]) -> ReplaceResult:
    """The tables written, and the counted outputs in total and per partition."""
    others: Counter[str] = Counter()
    others_per_partition: dict[str, Counter[str]] = defaultdict(Counter)
    for name, rows in manifests.items():
        if name in results:
            continue
        for row in rows:
            others[name] += row["num_records"]
            if row.get("partition_value") is not None:
                others_per_partition[name][row["partition_value"]] += row["num_records"]
    return ReplaceResult(
        tables=dict(results),
        other_counts=dict(others),
        other_counts_per_partition={k: dict(sorted(v.items())) for k, v in others_per_partition.items()},
    )
