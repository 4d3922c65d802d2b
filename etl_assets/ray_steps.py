"""Ray Data building blocks the assets share: co-location by key, a bucket exchange, and broadcast of
a small table."""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial

import numpy as np
import pyarrow as pa
import ray
import ray.data

from etl_assets.exchange_files import FILES, ScratchDir, node_scratch, read_bucket, write_buckets
from etl_assets.transforms.common import hash_buckets
from etl_assets.worker_memory import give_back_arrow_pages, giving_back, task_cache


def cluster_cpus() -> int:
    """CPUs of the cluster: the parallelism a job can count on."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def per_task_rows(total: int, most: int) -> int:
    """Rows for each task of a job over ``total`` rows: at most ``most``, and few enough that every
    CPU gets a task when there is enough to share."""
    return max(1, min(most, -(-total // cluster_cpus())))


def co_locate(
    ds: ray.data.Dataset | Sequence[ray.data.Dataset],
    key: str,
    fn: Callable[[pa.Table], pa.Table],
    buckets: int | None = None,
) -> ray.data.Dataset:
    """``fn`` on groups of ``ds``'s rows in which every row sharing a ``key`` value meets (an
    ``exchange`` by a hash of ``key`` into ``buckets`` buckets, by default one per CPU). Rows of
    several Datasets are given as their list rather than their ``union``, so each one's blocks
    are bucketed in the tasks that make them (``exchange``)."""
    buckets = buckets or cluster_cpus()
    tagged = [map_blocks(side, bucketed(_same, key, buckets)) for side in _datasets(ds)]
    return exchange(tagged, buckets, ignore_bucket(fn))


def _datasets(ds: ray.data.Dataset | Sequence[ray.data.Dataset]) -> list[ray.data.Dataset]:
    return [ds] if isinstance(ds, ray.data.Dataset) else list(ds)


def _same(table: pa.Table) -> pa.Table:
    return table


BUCKET = "__bucket"
# A bucket of an exchange holds about this many rows: two judged at once stay well inside a small
# machine's memory, and per-task costs stay small.
BUCKET_ROWS = 1_000_000


# Buckets one exchange of a window's days takes at most (a day of more is an exchange of its own).
# Each map-side file records where every bucket of its exchange starts, and every bucket's task
# reads that whole list: with all of a window's buckets in one exchange the lists would grow with
# the window's days times its buckets (a month of 100M-order days: 3,000 pieces x 3,000 buckets).
EXCHANGE_BUCKETS_MOST = 64


def buckets_for(rows: int) -> int:
    """Buckets for an exchange of ``rows`` rows: one per ``BUCKET_ROWS``, and at least one per CPU
    so every core has a bucket to work on."""
    return max(cluster_cpus(), -(-rows // BUCKET_ROWS))


def sorted_into_buckets(table: pa.Table, bucket: np.ndarray) -> pa.Table:
    """``table`` with its bucket numbers as a column, sorted by it (stably: each bucket keeps its
    rows' order), so a bucket's rows are one slice of the block."""
    order = np.argsort(bucket, kind="stable")
    return table.take(pa.array(order)).append_column(BUCKET, pa.array(bucket[order], pa.int64()))


def split_into_buckets(block: pa.Table, buckets: int) -> list[pa.Table]:
    """Runs in a Ray task: a block from ``sorted_into_buckets`` as one table per bucket (slices,
    without the bucket column), each its own object, so a bucket's task fetches only its rows."""
    numbers = block.column(BUCKET).to_numpy() if block.num_rows else np.zeros(0, np.int64)
    if (np.diff(numbers) < 0).any():
        # Ray Data may join the outputs of several calls into one block: sorted runs, not a sort.
        order = np.argsort(numbers, kind="stable")
        block, numbers = block.take(pa.array(order)), numbers[order]
    bounds = np.searchsorted(numbers, np.arange(buckets + 1))
    rows = block.drop_columns([BUCKET]) if BUCKET in block.column_names else block
    return [rows.slice(bounds[b], bounds[b + 1] - bounds[b]) for b in range(buckets)]


def _only_bucket(block: pa.Table, buckets: int) -> pa.Table:
    return split_into_buckets(block, buckets)[0]


def _gather(
    batch: pa.Table, bucket_parts: list[ray.ObjectRef], reduce: Callable[[pa.Table, int], pa.Table]
) -> Iterator[pa.Table]:
    for bucket in batch.column("bucket").to_pylist():
        yield from _reduced([t for t in ray.get(ray.get(bucket_parts[bucket])) if t.num_rows], bucket, reduce)


def _gather_files(
    batch: pa.Table, files: pa.Table, scratch: ScratchDir, reduce: Callable[[pa.Table, int], pa.Table]
) -> Iterator[pa.Table]:
    # ``scratch`` is not read here: in the driver's plan it keeps the files' folder alive.
    for bucket in batch.column("bucket").to_pylist():
        yield from _reduced(read_bucket(files, bucket), bucket, reduce)


def _reduced(
    tables: list[pa.Table], bucket: int, reduce: Callable[[pa.Table, int], pa.Table]
) -> Iterator[pa.Table]:
    if tables:
        yield reduce(pa.concat_tables(tables, promote_options="permissive"), bucket)


def exchange(
    tagged: ray.data.Dataset | Sequence[ray.data.Dataset],
    buckets: int,
    reduce: Callable[[pa.Table, int], pa.Table],
    on_disk: bool | None = None,
) -> ray.data.Dataset:
    """Gather the rows of every bucket in one task and run ``reduce(rows, bucket)`` there; a bucket
    no row fell in yields nothing. The blocks of ``tagged`` (one Dataset or several) come from
    ``sorted_into_buckets``.

    A shuffle in two steps of plain tasks. The map side runs here, when the exchange is built; then
    one task per bucket gathers its rows and nothing else. On a cluster of one node (``on_disk``
    None; True insists, and raises on any other cluster), each block's buckets go to a file on
    the node's disk in the task that made the block (``exchange_files``: no row enters the object
    store). Otherwise a task splits each block, as it streams out, into one object per bucket
    (the driver holds only references; the object store spills to disk beyond its cap), and a
    bucket's task gets the reference to its own list of parts, not every bucket's. On a small
    cluster either costs a fraction of Ray Data's hash shuffle, which starts aggregator actors
    and routes every row through them.
    """
    scratch = node_scratch() if on_disk is not False else None
    if on_disk and scratch is None:
        raise ValueError("an exchange through files needs a Ray cluster of the driver's node alone")
    sides = _datasets(tagged)
    if scratch is None:
        gather = partial(_gather, bucket_parts=_stored_parts(sides, buckets), reduce=reduce)
    else:
        # Each side's blocks are written in the tasks that made them: a union before the write
        # would pass every row through the object store on its way to a task of its own. The
        # sides run one after the other, so a worker's tasks meanwhile are all of one side's
        # kind and keep that kind's cache (a join's prepared side, ``worker_memory``).
        write = partial(_write_block, buckets=buckets, scratch=scratch)
        # Ray Data hands an empty block on without calling the function: it is no file's row.
        written = [
            t for side in sides for t in ray.get(map_blocks(side, write).to_arrow_refs()) if t.num_rows
        ]
        files = pa.concat_tables([FILES.empty_table(), *written])
        # The scratch folder rides along so it lives, in the driver, as long as the Dataset.
        gather = partial(_gather_files, files=files, scratch=scratch, reduce=reduce)
    items = [pa.table({"bucket": pa.array([b], pa.int64())}) for b in range(buckets)]
    return map_blocks(from_tables(items), gather, batch_size=1)


def _write_block(block: pa.Table, buckets: int, scratch: ScratchDir) -> pa.Table:
    return write_buckets(split_into_buckets(block.unify_dictionaries(), buckets), scratch)


def union(datasets: Sequence[ray.data.Dataset]) -> ray.data.Dataset:
    """The rows of every Dataset of ``datasets`` (at least one) in one Dataset."""
    return datasets[0].union(*datasets[1:]) if len(datasets) > 1 else datasets[0]


def _stored_parts(sides: Sequence[ray.data.Dataset], buckets: int) -> list[ray.ObjectRef]:
    """The map side through the object store: for each bucket, a stored list of its parts."""
    # With one return Ray stores the returned list itself as the object: one bucket returns its table.
    split = (
        ray.remote(_only_bucket)
        if buckets == 1
        else ray.remote(split_into_buckets).options(num_returns=buckets)
    )
    parts: list[list[ray.ObjectRef]] = [[] for _ in range(buckets)]
    # One side after the other, as through files.
    for bundle in (bundle for side in sides for bundle in side.iter_internal_ref_bundles()):
        for block in bundle.block_refs:
            outputs = split.remote(block, buckets)
            for bucket, ref in enumerate([outputs] if buckets == 1 else outputs):
                parts[bucket].append(ref)
    return [ray.put(refs) for refs in parts]


def _apply_and_bucket(
    batch: pa.Table, fn: Callable[[pa.Table], pa.Table], key: str, buckets: int
) -> pa.Table:
    out = fn(batch)
    return sorted_into_buckets(out, hash_buckets(out.column(key), buckets))


def bucketed(fn: Callable[[pa.Table], pa.Table], key: str, buckets: int) -> Callable[[pa.Table], pa.Table]:
    """``fn``, its output sorted into ``buckets`` buckets by a hash of ``key``, for ``exchange``."""
    return partial(_apply_and_bucket, fn=fn, key=key, buckets=buckets)


def _ignoring_bucket(rows: pa.Table, bucket: int, fn: Callable[[pa.Table], pa.Table]) -> pa.Table:
    return fn(rows)


def ignore_bucket(fn: Callable[[pa.Table], pa.Table]) -> Callable[[pa.Table, int], pa.Table]:
    """A reduce for ``exchange`` that runs ``fn`` on a bucket's rows, whichever bucket it is."""
    return partial(_ignoring_bucket, fn=fn)


def from_tables(tables: pa.Table | Sequence[pa.Table]) -> ray.data.Dataset:
    """A Dataset of driver-built Arrow tables, one block each, in order.

    ``ray.data.from_arrow`` asks a Ray task for each table's metadata and waits for the answer
    before the Dataset exists: about 65 ms here with idle workers, and as long as it takes a CPU to
    come free when the workers are busy or still warming up. ``from_blocks`` takes the same
    metadata in the driver, where the tables already are: about 7 ms. Ray calls it a developer
    API "primarily used for testing"; ray is pinned to 2.60, where it builds the same plan.
    """
    return ray.data.from_blocks([tables] if isinstance(tables, pa.Table) else list(tables))


def map_blocks(
    ds: ray.data.Dataset,
    fn: Callable[..., pa.Table | Iterator[pa.Table]],
    batch_size: int | None = None,
    fn_kwargs: dict | None = None,
) -> ray.data.Dataset:
    """``fn`` (a function, or a partial of one) on each whole block, or on batches of ``batch_size``
    rows, in Ray tasks that first give back what the worker's earlier tasks left
    (``worker_memory``). Every Ray Data map of the platform goes through here: transforms, reads,
    writes, joins."""
    if inspect.isclass(fn):
        raise TypeError(f"{fn.__name__}: a class would run as Ray Data actors; map_blocks runs tasks")
    return ds.map_batches(giving_back(fn), batch_format="pyarrow", batch_size=batch_size, fn_kwargs=fn_kwargs)


def _prepared_small(
    block_refs: list[ray.ObjectRef], prepare: Callable[[pa.Table], object], schema: pa.Schema
) -> object:
    key = tuple(ref.hex() for ref in block_refs)
    if key not in _PREPARED:
        _PREPARED.clear()
        blocks = [b for b in ray.get(block_refs) if b.num_rows]
        _PREPARED[key] = prepare(pa.concat_tables(blocks) if blocks else schema.empty_table())
    return _PREPARED[key]


def _join_block(
    batch: pa.Table,
    block_refs: list[ray.ObjectRef],
    prepare: Callable[[pa.Table], object],
    join: Callable[[pa.Table, object], pa.Table],
    schema: pa.Schema,
) -> pa.Table:
    return join(batch, _prepared_small(block_refs, prepare, schema))


# The small side of a broadcast join as prepared in this worker process, by the id of its blocks.
# Tasks run in long-lived workers, so it is built once per worker and reused by every block the
# worker joins; only the latest one is kept, and the worker's first task that joins nothing drops
# it (``worker_memory``), so neither later jobs nor later runs carry it.
_PREPARED: dict[tuple[str, ...], object] = task_cache(_join_block.__name__)


def broadcast_join(
    large: ray.data.Dataset,
    small: ray.data.Dataset,
    small_schema: pa.Schema,
    prepare: Callable[[pa.Table], object],
    join: Callable[[pa.Table, object], pa.Table],
) -> ray.data.Dataset:
    """Join every block of ``large`` with all of ``small``, which stays in the object store (the
    driver holds only references to its blocks) and is prepared once per worker.

    Plain tasks rather than an actor pool: Ray Data fuses them with the read before and the write
    after, so a block goes from its files to the table's files in one task, on every core.
    """
    return join_stored(large, small.to_arrow_refs(), small_schema, prepare, join)


def join_stored(
    large: ray.data.Dataset,
    block_refs: list[ray.ObjectRef],
    small_schema: pa.Schema,
    prepare: Callable[[pa.Table], object],
    join: Callable[[pa.Table, object], pa.Table],
) -> ray.data.Dataset:
    """``broadcast_join`` with a small side already in the object store (``stored``)."""
    return map_blocks(
        large,
        _join_block,
        fn_kwargs={"block_refs": block_refs, "prepare": prepare, "join": join, "schema": small_schema},
    )


def stored(ds: ray.data.Dataset) -> tuple[list[ray.ObjectRef], int]:
    """Run ``ds`` and leave its blocks in the object store: their references, and how many rows
    they hold (from their metadata: the driver holds no row)."""
    refs, rows = [], 0
    for bundle in ds.iter_internal_ref_bundles():
        refs += bundle.block_refs
        rows += bundle.num_rows() or 0
    return refs, rows


@dataclass
class JobTimer:
    seconds: float = 0.0

    def rate(self, rows: int) -> float:
        return round(rows / self.seconds, 1) if self.seconds > 0 else 0.0


@contextmanager
def timed() -> Iterator[JobTimer]:
    """Wall time of a Ray job (Dataset execution happens inside the block).

    The driver, like a worker (``worker_memory``), gives back the pages Arrow's allocator kept for
    its thread, before the job and after it: the Delta logs, manifests and small windows it read
    in earlier steps. In three pairs of 10M days this lowered the driver at the peak from 468-491
    to 450-462 MiB."""
    timer = JobTimer()
    give_back_arrow_pages()
    start = time.perf_counter()
    try:
        yield timer
    finally:
        timer.seconds = round(time.perf_counter() - start, 3)
        give_back_arrow_pages()


def user_error(exc: BaseException, kinds: tuple[type[BaseException], ...]) -> BaseException | None:
    """The first exception of ``kinds`` in ``exc``'s chain, or None.

    Ray re-raises a task's exception as ``RayTaskError(<its class>)`` holding the original as
    ``cause`` (with ``raise_original_map_exception`` set, as ``RayResource`` does); this finds it
    so its message can be shown as is.
    """
    pending, seen = [exc], set()
    while pending:
        current = pending.pop(0)
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        inner = getattr(current, "cause", None)
        if isinstance(inner, kinds):
            return inner  # the task's exception itself, without Ray's remote traceback
        if isinstance(current, kinds):
            return current
        pending += [getattr(current, "cause", None), current.__cause__, current.__context__]
    return None


def error_message(exc: BaseException) -> str:
    """An exception's own message, without the remote traceback Ray may put in front of it."""
    first = exc.args[0] if exc.args else None
    return first if isinstance(first, str) else str(exc)
