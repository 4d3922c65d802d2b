"""Run by tests in a process of its own: what a private Ray started by ``RayResource`` runs.

It spills and restores far more than its object store holds, once with Ray's default number of
spill workers and once with ``spill_workers=1``; prints, for each, how many spill and restore
processes Ray started, and which of Ray's Python helper scripts still run during the asset.

    python -m etl_assets_tests.private_ray_probe TEMP_DIR
"""

import json
import sys

import dagster as dg
import numpy as np
import psutil
import ray

from etl_assets.resources import RayResource

OBJECTS = 60
OBJECT_BYTES = 4 * 2**20
STORE_MB = 80


def io_workers() -> dict[str, int]:
    """Ray's spill and restore processes under this one (their titles say which they are)."""
    found = {"SpillWorker": 0, "RestoreWorker": 0}
    for proc in psutil.Process().children(recursive=True):
        try:
            title = proc.cmdline()[0]
        except (psutil.Error, IndexError):
            continue
        for kind in found:
            if title.startswith("ray::") and kind in title:
                found[kind] += 1
    return found


HELPER_SCRIPTS = ("autoscaler/_private/monitor.py", "_private/log_monitor.py", "dashboard/dashboard.py")


def helpers() -> list[str]:
    """Which of Ray's Python helper scripts run under this process."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            line = " ".join(proc.cmdline())
        except psutil.Error:
            continue
        found += [script for script in HELPER_SCRIPTS if script in line]
    return sorted(found)


@dg.asset
def spilled(ray_cluster: RayResource) -> dict:
    # Three times what the store holds: most are spilled as they are put, then restored together.
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
