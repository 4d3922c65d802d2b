"""Reading a run's window back from the warehouse a few partitions at a time: one scan serves many
small partitions (a 30-day backfill's checks would otherwise open the table 30 times each), and
memory stays at about ``GROUP_ROWS`` rows however long the window."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import date

import pyarrow as pa

from etl_assets.contracts import TableContract
from etl_assets.sizing import runs
from etl_assets.warehouse.base import PartitionValue, Warehouse
from etl_assets.warehouse.blocks import partition_groups


def read_columns(
    backend: Warehouse,
    contract: TableContract,
    partitions: Sequence[date] | None,
    columns: Sequence[str],
) -> pa.Table:
    """``columns`` of the given partitions (or of the whole table) as one Arrow table."""
    schema = pa.schema([contract.schema.field(c) for c in columns])
    batches = list(backend.scan(contract, partitions, columns))
    return pa.Table.from_batches(batches, schema=schema) if batches else schema.empty_table()


GROUP_ROWS = 2_000_000


def partition_tables(
    backend: Warehouse, contract: TableContract, values: Sequence[PartitionValue], columns: Sequence[str]
) -> Iterator[tuple[PartitionValue, pa.Table]]:
    """``columns`` of each partition in ``values``, in order, read in groups of partitions of about
    ``GROUP_ROWS`` rows."""
    counts = backend.partition_row_counts(contract)
    for run in runs([counts.get(str(value), 0) for value in values], GROUP_ROWS):
        yield from _split(backend, contract, [values[i] for i in run], columns)


def _split(
    backend: Warehouse, contract: TableContract, group: Sequence[PartitionValue], columns: Sequence[str]
) -> Iterator[tuple[PartitionValue, pa.Table]]:
    """The group's rows read at once, then each partition's rows, in their order."""
    column = contract.partition_column
    table = read_columns(backend, contract, group, list(dict.fromkeys([*columns, column])))
    rows = dict(partition_groups(table, column))
    for value in group:
        yield value, rows.get(str(value), table.slice(0, 0)).select(list(columns))


def days_of(
    backend: Warehouse, contract: TableContract, days: Sequence[date], columns: Sequence[str]
) -> Iterator[tuple[date, pa.Table]]:
    return partition_tables(backend, contract, days, columns)


def duplicate_keys(table: pa.Table, keys: Sequence[str]) -> pa.Table:
    """Key values that occur more than once, with how often."""
    counts = table.group_by(list(keys), use_threads=False).aggregate([([], "count_all")])
    return counts.filter(pa.compute.greater(counts.column("count_all"), 1))
