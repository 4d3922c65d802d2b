"""What a Ray worker gives back when it starts a task of the platform.

A worker lives for the whole run and goes from one job to the next. Two things stayed behind in it:

- Arrow's allocator (mimalloc) keeps pages a task freed for the thread that allocated them; only an
  allocation or a collection in that same thread gives them back, and an idle worker makes none.
  After the 10M `customer_orders` step an idle worker held about 140 MiB that
  ``release_unused()`` (a forced collection, under a millisecond) gave back; called from another
  thread it gave back nothing, so it runs in the task's own thread, as its first function starts.
  (Pages that Arrow's own thread pool allocated stay with those threads.)
- A cache a task fills for the tasks after it (the small side of a broadcast join, prepared once per
  worker: about 80 MiB for 500,000 customers) is of use only to tasks of the same kind. A task of
  another kind drops it: Ray Data names each task after the functions fused into it
  (``MapBatches(_read_files)->MapBatches(_join_block)->...``), so the cache is kept while the
  worker runs tasks that name its user.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow as pa
import ray

# Each cache, with the mark a task's name carries when the task uses it.
_CACHES: list[tuple[str, dict]] = []
# The task this worker last gave back for: a task's fused functions give back once, at the first.
_last_task: list[str | None] = [None]


def task_cache(user: str) -> dict:
    """A dict kept in this worker while it runs tasks whose functions include ``user``, dropped by
    the first task of the platform (``giving_back``) that does not."""
    cache: dict = {}
    _CACHES.append((f"({user})", cache))
    return cache


def _at_task_start() -> None:
    context = ray.get_runtime_context()
    task = context.get_task_id()
    if task is not None and task == _last_task[0]:
        return
    _last_task[0] = task
    if any(cache for _, cache in _CACHES):
        name = context.get_task_name() or ""
        for mark, cache in _CACHES:
            if cache and mark not in name:
                cache.clear()
    give_back_arrow_pages()


def give_back_arrow_pages() -> None:
    """Hand back the pages Arrow's allocator keeps for the calling thread (above): the worker's
    task thread, or the driver's around its Ray jobs (``ray_steps.timed``)."""
    pa.default_memory_pool().release_unused()


def udf_name(fn: Callable) -> str:
    """The name Ray Data gives a map of ``fn`` (``MapBatches(<name>)``): a partial's function's."""
    return getattr(fn, "__name__", None) or getattr(getattr(fn, "func", None), "__name__", type(fn).__name__)


def giving_back(fn: Callable) -> Callable:
    """``fn`` for a Ray Data map, giving back first, once per task, what the worker's earlier tasks
    left (above).

    The wrapper carries ``fn``'s name, so the task and its process keep their names
    (``MapBatches(_read_files)``) and the caches their marks. Ray pickles it by value; it reaches
    the caches only through this module's functions, so a worker uses its imported module's.
    """

    def run(*args: Any, **kwargs: Any) -> Any:
        _at_task_start()
        return fn(*args, **kwargs)

    run.__name__ = udf_name(fn)
    return run
