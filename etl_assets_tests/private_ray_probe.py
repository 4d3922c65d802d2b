"""Run by tests in a process of its own: what a private Ray started by ``RayResource`` runs.

It spills and restores far more than its object store holds, once with Ray's default number of
spill workers and once with ``spill_workers=1``; prints, for each, how many spill and restore
processes Ray started, and which of Ray's Python helper scripts still run during the asset.

    python -m etl_assets_tests.private_ray_probe TEMP_DIR
"""

import json
import sys
from pathlib import Path

import dagster as dg
import numpy as np
import psutil
import ray
from ray._private import ray_constants

from etl_assets.resources import RayResource

OBJECTS = 60
OBJECT_BYTES = 4 * 2**20
STORE_MB = 80


def io_workers() -> dict[str, int]:
    """Ray's spill and restore processes under this one (their titles say which they are)."""
    found = {
        ray_constants.WORKER_PROCESS_TYPE_SPILL_WORKER_NAME: 0,
        ray_constants.WORKER_PROCESS_TYPE_RESTORE_WORKER_NAME: 0,
    }
    for proc in psutil.Process().children(recursive=True):
        try:
            title = proc.cmdline()[0]
        except (psutil.Error, IndexError):
            continue
        for kind in found:
            if title.startswith("ray::") and kind in title:
                found[kind] += 1
    return found


def helpers() -> list[str]:
    """Which of Ray's Python helper scripts run under this process: the log monitor, an autoscaler
    monitor (``monitor.py``, whichever autoscaler version) and the API server (``dashboard.py``)."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            scripts = [Path(arg).name for arg in proc.cmdline() if arg.endswith(".py")]
        except psutil.Error:
            continue
        found += [s for s in scripts if s in ("log_monitor.py", "monitor.py", "dashboard.py")]
    return sorted(found)


@dg.asset
def spilled(ray_cluster: RayResource) -> dict:
    # Three times what the store holds: most are spilled as they are put, then restored together.
    # One ray.get of them all asks for every restore at once, so Ray starts as many restore
    # processes as it may: one get per object would never need more than one.
    refs = [ray.put(np.full(OBJECT_BYTES, i, np.uint8)) for i in range(OBJECTS)]
    if [int(array[0]) for array in ray.get(refs)] != list(range(OBJECTS)):
        raise AssertionError("an object came back from the disk with other contents")
    return {"io_workers": io_workers(), "helpers": helpers()}


def main() -> None:
    for workers in (None, 1):
        resource = RayResource(
            object_store_memory_mb=STORE_MB, num_cpus=1, spill_workers=workers, temp_dir=sys.argv[1]
        )
        result = dg.materialize([spilled], resources={"ray_cluster": resource})
        print(json.dumps({"spill_workers": workers, **result.output_for_node("spilled")}))


if __name__ == "__main__":
    main()
