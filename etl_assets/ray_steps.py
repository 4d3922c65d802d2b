"""Ray Data building blocks the assets share: co-location by key and broadcast of a small table."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import pyarrow as pa
import ray
import ray.data


def shuffle_blocks() -> int:
    """Blocks for a keyed shuffle: one per CPU of the cluster."""
    return max(1, int(ray.cluster_resources().get("CPU", 1)))


def co_locate(ds: ray.data.Dataset, keys: Sequence[str]) -> ray.data.Dataset:
    """Hash-partition ``ds`` on ``keys`` so that rows with equal keys share a block."""
    return ds.repartition(shuffle_blocks(), keys=list(keys))


def map_blocks(ds: ray.data.Dataset, fn: Callable[[pa.Table], pa.Table]) -> ray.data.Dataset:
    """Apply a pure Arrow transform to each whole block."""
    return ds.map_batches(fn, batch_format="pyarrow", batch_size=None)


class BroadcastJoin:
    """A Ray actor UDF holding a small table, prepared once per worker and joined to every block."""

    def __init__(
        self,
        block_refs: list[ray.ObjectRef],
        prepare: Callable[[pa.Table], object],
        join: Callable[[pa.Table, object], pa.Table],
        schema: pa.Schema,
    ):
        blocks = [b for b in ray.get(block_refs) if b.num_rows]
        table = pa.concat_tables(blocks) if blocks else schema.empty_table()
        self._small = prepare(table)
        self._join = join

    def __call__(self, batch: pa.Table) -> pa.Table:
        return self._join(batch, self._small)


def broadcast_join(
    large: ray.data.Dataset,
    small: ray.data.Dataset,
    small_schema: pa.Schema,
    prepare: Callable[[pa.Table], object],
    join: Callable[[pa.Table, object], pa.Table],
) -> ray.data.Dataset:
    """Join every block of ``large`` with all of ``small``, which stays in the object store:
    the driver only holds references to its blocks."""
    refs = small.to_arrow_refs()
    return large.map_batches(
        BroadcastJoin,
        fn_constructor_kwargs={"block_refs": refs, "prepare": prepare, "join": join, "schema": small_schema},
        batch_format="pyarrow",
        batch_size=None,
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=shuffle_blocks()),
    )


@dataclass
class JobTimer:
    seconds: float = 0.0

    def rate(self, rows: int) -> float:
        return round(rows / self.seconds, 1) if self.seconds > 0 else 0.0


@contextmanager
def timed() -> Iterator[JobTimer]:
    """Wall time of a Ray job (Dataset execution happens inside the block)."""
    timer = JobTimer()
    start = time.perf_counter()
    try:
        yield timer
    finally:
        timer.seconds = round(time.perf_counter() - start, 3)


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
