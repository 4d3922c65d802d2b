"""What `RayResource` sets up for the assets' Ray Data jobs."""

import os
import time

import dagster as dg
import pyarrow as pa
import ray
import ray.data

from etl_assets.resources import RayResource

TASK_SECONDS = 0.8


def _busy(block: pa.Table) -> pa.Table:
    start = time.time()
    time.sleep(TASK_SECONDS)
    return pa.table({"pid": [os.getpid()], "start": [start], "end": [time.time()]})


@ray.remote(num_cpus=1)
def _hold_a_worker() -> int:
    time.sleep(0.3)
    return os.getpid()


def test_a_ray_data_job_runs_a_task_on_every_cpu_from_its_start():
    """Ray 2.60 left a new Dataset execution on one task at a time for its first second (until
    it asked again which CPUs it may use); the resource makes it ask sooner. Two blocks on the
    session's two CPUs: their tasks must overlap, though each is shorter than that second."""
    # Two live worker processes first, so the overlap does not wait for a worker to start.
    assert len(set(ray.get([_hold_a_worker.remote() for _ in range(2)]))) == 2

    @dg.asset
    def two_blocks(ray_cluster: RayResource) -> dg.MaterializeResult:
        blocks = [pa.table({"x": [i]}) for i in range(2)]
        ds = ray.data.from_arrow(blocks).map_batches(_busy, batch_format="pyarrow", batch_size=None)
        tasks = sorted(ds.take_all(), key=lambda t: t["start"])
        return dg.MaterializeResult(metadata={"tasks": tasks})

    result = dg.materialize([two_blocks], resources={"ray_cluster": RayResource()})
    assert result.success
    first, second = result.asset_materializations_for_node("two_blocks")[0].metadata["tasks"].value
    assert first["pid"] != second["pid"]
    assert second["start"] < first["end"], (first, second)
