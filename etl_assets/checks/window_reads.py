"""The checks' reads of stored rows: a small window whole, in the driver, and a bigger one block by
block in Ray tasks, so that a check of a day of any size holds no more in the driver than
``LOCAL_ROWS`` rows and its results."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from functools import partial

import pyarrow as pa
import ray

from etl_assets.contracts import TableContract
from etl_assets.ray_steps import buckets_for, co_locate, map_blocks
from etl_assets.resources import RayResource
from etl_assets.transforms.check_partials import key_tally
from etl_assets.warehouse.base import PartitionValue, Warehouse


def read_columns(
    backend: Warehouse,
    contract: TableContract,
    partitions: Sequence[PartitionValue] | None,
    columns: Sequence[str],
) -> pa.Table:
    """``columns`` of the given partitions (or of the whole table) as one Arrow table."""
    schema = pa.schema([contract.schema.field(c) for c in columns])
    batches = list(backend.scan(contract, partitions, columns))
    return pa.Table.from_batches(batches, schema=schema) if batches else schema.empty_table()


# A window of at most this many rows is read into the driver and judged there: a Ray job's own
# cost (tenths of a second each) would be most of a small day's checks.
LOCAL_ROWS = 250_000


def block_partials(
    ray_cluster: RayResource | None,
    backend: Warehouse,
    contract: TableContract,
    partitions: Sequence[PartitionValue] | None,
    columns: Sequence[str],
    per_block: Callable[[pa.Table], pa.Table],
    spread: str | None = None,
) -> Iterator[pa.Table]:
    """``per_block`` on every block of the window's ``columns`` (or the whole table's), each in a Ray
    task, and its small results here: the rows stay in the workers and the object store, so the
    driver's memory does not grow with the window, and every core takes a share. With ``spread``,
    on groups in which every row sharing a ``spread`` value meets instead: an exchange by a hash
    of ``spread`` into buckets of about a million rows, so no task holds much more however big the
    window. A window of at most ``LOCAL_ROWS`` rows is one block, read and judged here, and
    ``ray_cluster`` (``None``: Ray is up) is started only for a bigger one."""
    if not backend.exists(contract):
        return iter(())
    columns = list(dict.fromkeys(columns))
    rows = backend.window_row_count(contract, partitions)
    if rows <= LOCAL_ROWS:
        return iter([per_block(read_columns(backend, contract, partitions, columns))])
    if ray_cluster is not None:
        ray_cluster.ensure_started()
    elif not ray.is_initialized():
        # Ray Data would start a Ray of its own, with none of the run's settings, left running.
        raise RuntimeError(f"the checks of {contract.name} need Ray: pass the run's RayResource")
    read = backend.read(contract, partitions, columns)
    buckets = buckets_for(rows)
    judged = co_locate(read, spread, per_block, buckets) if spread else map_blocks(read, per_block)
    return judged.iter_batches(batch_format="pyarrow", batch_size=None)


def key_tallies(
    ray_cluster: RayResource | None,
    backend: Warehouse,
    contract: TableContract,
    partitions: Sequence[PartitionValue] | None,
) -> Iterator[pa.Table]:
    """``key_tally`` of the window's keys (per partition, with ``partitions``; else over the whole
    table), each key's rows meeting in one group (``block_partials`` with ``spread``): only counts
    and a few keys reach the driver."""
    column = contract.partition_column if partitions is not None else None
    tally = partial(key_tally, keys=list(contract.keys), column=column)
    # Hashed on a key column other than the partition column: a day's rows all share that one.
    spread = next((k for k in contract.keys if k != contract.partition_column), contract.keys[0])
    columns = [*contract.keys, *([column] if column else [])]
    return block_partials(ray_cluster, backend, contract, partitions, columns, tally, spread)
