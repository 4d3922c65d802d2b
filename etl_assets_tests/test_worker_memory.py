"""What a Ray worker gives back when it starts a task of the platform (``worker_memory``)."""

import os
import uuid
from functools import partial
from pathlib import Path

import numpy as np
import psutil
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import ray

from etl_assets import ray_steps, worker_memory
from etl_assets.ray_steps import broadcast_join, from_tables, map_blocks
from etl_assets.worker_memory import giving_back, task_cache


def _rss_mib() -> float:
    return psutil.Process().memory_info().rss / 2**20


def _in_task(batch: pa.Table) -> pa.Table:
    """Where a task ran and what its worker held as it started."""
    return pa.table(
        {
            "pid": [os.getpid()] * batch.num_rows,
            "task": [ray.get_runtime_context().get_task_name()] * batch.num_rows,
            "prepared": [len(ray_steps._PREPARED)] * batch.num_rows,
        }
    )


def _count_prepare(small: pa.Table, folder: str) -> set:
    # One file per preparation, in a folder every worker sees.
    Path(folder, uuid.uuid4().hex).touch()
    return set(small.column("key").to_pylist())


def _join_here(batch: pa.Table, keys: set) -> pa.Table:
    found = [k in keys for k in batch.column("key").to_pylist()]
    return batch.append_column("found", pa.array(found)).append_column(
        "pid", pa.array([os.getpid()] * batch.num_rows)
    )


def test_a_join_prepares_its_small_side_once_per_worker_and_a_task_of_another_kind_drops_it(tmp_path):
    blocks = [pa.table({"key": np.arange(b * 10, b * 10 + 10)}) for b in range(8)]
    small = pa.table({"key": np.arange(0, 80, 3)})
    joined = pa.concat_tables(
        ray.get(
            broadcast_join(
                from_tables(blocks),
                from_tables(small),
                small.schema,
                partial(_count_prepare, folder=str(tmp_path)),
                _join_here,
            ).to_arrow_refs()
        )
    )
    expected = {k: k % 3 == 0 for k in range(80)}
    assert dict(zip(joined.column("key").to_pylist(), joined.column("found").to_pylist())) == expected
    joiners = set(joined.column("pid").to_pylist())
    # Eight blocks; prepared once by each worker that joined (a worker's later blocks reuse it).
    assert len(list(tmp_path.iterdir())) == len(joiners) < len(blocks)
    # A task of another kind, on a worker that joined, starts with the prepared side gone.
    seen: list[dict] = []
    for _ in range(20):
        ran = map_blocks(from_tables([pa.table({"x": [i]}) for i in range(4)]), _in_task)
        seen += ran.take_all()
        if joiners & {row["pid"] for row in seen}:
            break
    assert joiners & {row["pid"] for row in seen}
    assert {row["prepared"] for row in seen} == {0}
    # The task carries its function's name: the mark a cache is kept by.
    assert all("MapBatches(_in_task)" in row["task"] for row in seen)


def _allocate_and_free() -> None:
    # About 240 MB through Arrow's allocator in this thread, in arrays of 800 KB (the sizes its
    # pages keep once freed; far bigger ones go back to the system at once), then freed.
    values = pa.array(np.random.default_rng(0).random(10_000_000))
    kept = [pc.multiply(values.slice(i * 100_000, 100_000), f) for f in (1.0, 2.0, 3.0) for i in range(100)]
    del kept, values


def _as_a_new_task_starts() -> None:
    worker_memory._last_task[0] = None
    worker_memory._at_task_start()


@ray.remote
def _kept_then_given_back() -> tuple[float, float, float]:
    # From what the worker holds once its earlier tasks' pages are given back: pages kept from
    # them would take the new arrays without the worker growing.
    _as_a_new_task_starts()
    before = _rss_mib()
    _allocate_and_free()
    freed = _rss_mib()
    _as_a_new_task_starts()
    return before, freed, _rss_mib()


def test_a_task_start_gives_back_what_the_thread_freed_and_the_allocator_kept():
    # The workers inherit the tests' environment: another allocator, or mimalloc told to give
    # pages back at once, keeps nothing to give back.
    if pa.default_memory_pool().backend_name != "mimalloc" or "MIMALLOC_PURGE_DELAY" in os.environ:
        pytest.skip("Arrow's allocator here is not mimalloc with its defaults")
    before, freed, given = ray.get(_kept_then_given_back.remote())
    # Freed, the pages stay with the worker (all in one task: no later allocation purges them).
    assert freed > before + 150
    assert given < freed - 150


def _free_in_task(batch: pa.Table) -> pa.Table:
    _allocate_and_free()
    return pa.table({"pid": [os.getpid()], "rss": [_rss_mib()]})


def _rss_at_start(batch: pa.Table) -> pa.Table:
    return pa.table({"pid": [os.getpid()], "rss": [_rss_mib()]})


def test_the_next_task_of_the_platform_on_a_worker_starts_lighter():
    freed = map_blocks(from_tables(pa.table({"x": [0]})), _free_in_task).take_all()[0]
    starts: list[dict] = []
    for _ in range(20):
        rows = map_blocks(from_tables([pa.table({"x": [i]}) for i in range(2)]), _rss_at_start).take_all()
        starts = [r for r in rows if r["pid"] == freed["pid"]]
        if starts:
            break
    assert starts, "no later task ran on the worker that freed"
    assert starts[0]["rss"] < freed["rss"] - 150


def test_a_cache_is_dropped_by_a_call_outside_a_task_of_its_user(monkeypatch):
    monkeypatch.setattr(worker_memory, "_CACHES", [])
    cache = task_cache("_never_a_task_of_this_name")
    cache["held"] = object()
    assert giving_back(len)("abc") == 3
    assert cache == {}
    assert giving_back(partial(_count_prepare, folder="")).__name__ == "_count_prepare"


def test_map_blocks_refuses_a_class():
    class Joiner:
        def __call__(self, batch: pa.Table) -> pa.Table:
            return batch

    with pytest.raises(TypeError, match="Joiner"):
        map_blocks(from_tables(pa.table({"x": [1]})), Joiner)
