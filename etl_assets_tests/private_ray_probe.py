"""Run by tests in a process of its own: what a private Ray started by ``RayResource`` runs.

It spills and restores far more than its object store holds, once with Ray's default number of
spill workers and once with ``spill_workers=1``; prints, for each, how many spill and restore
processes Ray started, which of Ray's Python helper scripts still run during the asset, and which
of Ray Data's helper actors exist after a Dataset execution: on the private Ray as it is (of fixed
size), then as if the process had only connected to it (the control: Ray Data as shipped).

    python -m etl_assets_tests.private_ray_probe TEMP_DIR
"""

import json
import sys
from pathlib import Path

import dagster as dg
import numpy as np
import psutil
import ray
import ray.data
from ray._private import ray_constants

from etl_assets import fixed_size_ray
from etl_assets.resources import RayResource

OBJECTS = 60
OBJECT_BYTES = 4 * 2**20
STORE_MB = 80


IO_WORKERS = (
    ray_constants.WORKER_PROCESS_TYPE_SPILL_WORKER_NAME,
    ray_constants.WORKER_PROCESS_TYPE_RESTORE_WORKER_NAME,
)
# Ray's Python helpers: the log monitor, an autoscaler monitor (either autoscaler version's
# monitor.py) and the API server.
HELPER_SCRIPTS = ("log_monitor.py", "monitor.py", "dashboard.py")


def ray_processes() -> dict:
    """Ray's spill and restore processes under this one, counted by kind (their titles say which),
    the helper scripts running under it, and its programs (the GCS and the raylet)."""
    io_workers = dict.fromkeys(IO_WORKERS, 0)
    helpers, programs = [], set()
    for proc in psutil.Process().children(recursive=True):
        try:
            command = proc.cmdline()
        except psutil.Error:
            continue
        if command and command[0].startswith("ray::"):
            for kind in IO_WORKERS:
                io_workers[kind] += kind in command[0]
        helpers += [Path(arg).name for arg in command if Path(arg).name in HELPER_SCRIPTS]
        programs |= {Path(command[0]).name} if command else set()
    return {"io_workers": io_workers, "helpers": sorted(helpers), "programs": sorted(programs)}


def data_actors() -> list[str]:
    """The named actors of every namespace after a small Dataset execution (Ray Data's helpers are
    named, detached actors)."""
    # Not a bare assert: the probe must check this under ``python -O`` too.
    if ray.data.range(10, override_num_blocks=2).map_batches(lambda b: b).count() != 10:
        raise AssertionError("a Dataset of 10 rows did not count 10")
    return sorted(a["name"] for a in ray.util.list_named_actors(all_namespaces=True))


@dg.asset
def spilled(ray_cluster: RayResource) -> dict:
    # Three times what the store holds: most are spilled as they are put, then restored together.
    # One ray.get of them all asks for every restore at once, so Ray starts as many restore
    # processes as it may: one get per object would never need more than one.
    refs = [ray.put(np.full(OBJECT_BYTES, i, np.uint8)) for i in range(OBJECTS)]
    if [int(array[0]) for array in ray.get(refs)] != list(range(OBJECTS)):
        raise AssertionError("an object came back from the disk with other contents")
    on_fixed_size = data_actors()
    fixed_size_ray._FIXED_SIZE.clear()  # the control: Ray Data as shipped on the same Ray
    return {**ray_processes(), "data_actors": on_fixed_size, "data_actors_as_shipped": data_actors()}


def main() -> None:
    for workers in (None, 1):
        resource = RayResource(
            object_store_memory_mb=STORE_MB, num_cpus=1, spill_workers=workers, temp_dir=sys.argv[1]
        )
        result = dg.materialize([spilled], resources={"ray_cluster": resource})
        print(json.dumps({"spill_workers": workers, **result.output_for_node("spilled")}))


if __name__ == "__main__":
    main()
