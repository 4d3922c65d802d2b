"""A private local Ray for a benchmark run, started and stopped by the benchmark itself."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import ray

from etl_assets.resources import start_local_ray


@contextmanager
def private_ray(object_store_mb: int = 1024, spill_workers: int | None = None) -> Iterator[float]:
    """Start Ray with ``address="local"`` in a temp dir of its own, as ``RayResource`` starts its
    private one (``spill_workers`` as its setting of that name); yields the start-up seconds."""
    temp_dir = tempfile.mkdtemp(prefix="etl_bench_ray_", dir="/tmp")
    start = time.perf_counter()
    # Ray sets up its own logging here, as the benchmarks always had it; a run leaves it to Dagster.
    # Of fixed size, as RayResource's: the Ray Data executions that do not go through the resource
    # (delta_write) use every CPU from their start too.
    start_local_ray(temp_dir, object_store_mb, spill_workers, configure_logging=True)
    try:
        yield time.perf_counter() - start
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
