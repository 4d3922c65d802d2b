"""Reading a run's window back from the warehouse one day at a time, so memory stays at one day."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import date

import pyarrow as pa

from etl_assets.contracts import TableContract
from etl_assets.warehouse.base import Warehouse


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


def days_of(
    backend: Warehouse, contract: TableContract, days: Sequence[date], columns: Sequence[str]
) -> Iterator[tuple[date, pa.Table]]:
    for day in days:
        yield day, read_columns(backend, contract, [day], columns)


def duplicate_keys(table: pa.Table, keys: Sequence[str]) -> pa.Table:
    """Key values that occur more than once, with how often."""
    counts = table.group_by(list(keys), use_threads=False).aggregate([([], "count_all")])
    return counts.filter(pa.compute.greater(counts.column("count_all"), 1))
