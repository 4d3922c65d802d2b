"""Reading a run's window back from the warehouse one day at a time, so memory stays at one day."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import date

import pyarrow as pa

from etl_assets.transforms.tables import TableContract
from etl_assets.warehouse.base import Warehouse


def days_of(
    backend: Warehouse, contract: TableContract, days: Sequence[date], columns: Sequence[str]
) -> Iterator[tuple[date, pa.Table]]:
    schema = pa.schema([contract.schema.field(c) for c in columns])
    for day in days:
        batches = list(backend.scan(contract, [day], columns))
        yield day, pa.Table.from_batches(batches, schema=schema) if batches else schema.empty_table()


def duplicate_keys(table: pa.Table, keys: Sequence[str]) -> pa.Table:
    """Key values that occur more than once, with how often."""
    counts = table.group_by(list(keys), use_threads=False).aggregate([([], "count_all")])
    return counts.filter(pa.compute.greater(counts.column("count_all"), 1))
