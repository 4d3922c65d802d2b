"""A private local Ray for a benchmark run, started and stopped by the benchmark itself."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import ray

from etl_assets.ray_cluster import spill_settings
from etl_assets.resources import learn_data_limits_sooner, stop_idle_helpers


@contextmanager
def private_ray(object_store_mb: int = 1024, spill_workers: int | None = None) -> Iterator[float]:
    """Start Ray with ``address="local"`` in a temp dir of its own, as ``RayResource`` starts its
    private one (``spill_workers`` as its setting of that name); yields the start-up seconds."""
    temp_dir = tempfile.mkdtemp(prefix="etl_bench_ray_", dir="/tmp")
    start = time.perf_counter()
    ray.init(
        address="local",
        _temp_dir=temp_dir,
        include_dashboard=False,
        log_to_driver=False,
        object_store_memory=object_store_mb * 2**20,
        _system_config=spill_settings(spill_workers),
    )
    # As RayResource does: the idle helpers stopped, and Ray Data executions that do not go through
    # the resource (delta_write) learn their CPUs as soon.
    stop_idle_helpers()
    learn_data_limits_sooner()
    try:
        yield time.perf_counter() - start
    finally:
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
