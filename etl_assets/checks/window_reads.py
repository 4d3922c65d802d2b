"""The checks' reads of stored rows: a small table whole, and a run's window block by block in Ray
tasks, so that a check of a day of any size holds no more in the driver than its results."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import date

import pyarrow as pa

from etl_assets.contracts import TableContract
from etl_assets.ray_steps import buckets_for, co_locate, map_blocks
from etl_assets.warehouse.base import PartitionValue, Warehouse


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


def block_partials(
    backend: Warehouse,
    contract: TableContract,
    partitions: Sequence[PartitionValue] | None,
    columns: Sequence[str],
    partial: Callable[[pa.Table], pa.Table],
) -> Iterator[pa.Table]:
    """``partial`` on every block of the window's ``columns`` (or the whole table's), each in a Ray
    task, and its small results here: the rows stay in the workers and the object store, so the
    driver's memory does not grow with the window, and every core takes a share."""
    if not backend.exists(contract):
        return iter(())
    ds = map_blocks(backend.read(contract, partitions, list(dict.fromkeys(columns))), partial)
    return ds.iter_batches(batch_format="pyarrow", batch_size=None)


def key_duplicates(
    backend: Warehouse,
    contract: TableContract,
    partitions: Sequence[PartitionValue] | None,
    reduce: Callable[[pa.Table], pa.Table],
) -> Iterator[pa.Table]:
    """``reduce`` on groups of the window's key columns (and partition column, with
    ``partitions``) in which every row sharing a key meets: an exchange by a hash of the first key
    column, into buckets of about a million rows, so no task holds much more however big the day."""
    if not backend.exists(contract):
        return iter(())
    column = contract.partition_column if partitions is not None else None
    columns = list(dict.fromkeys([*contract.keys, *([column] if column else [])]))
    if partitions is None:
        rows = backend.row_count(contract)
    else:
        counts = backend.partition_row_counts(contract)
        rows = sum(counts.get(str(value), 0) for value in partitions)
    ds = co_locate(backend.read(contract, partitions, columns), contract.keys[0], reduce, buckets_for(rows))
    return ds.iter_batches(batch_format="pyarrow", batch_size=None)
