"""Run by a test in a process of its own: a private Ray started by ``RayResource`` spills and
restores far more than its object store holds, once with Ray's default number of spill workers
and once with ``spill_workers=1``; prints, for each, how many of those processes Ray started.

    python -m etl_assets_tests.spill_probe TEMP_DIR
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


@dg.asset
def spilled(ray_cluster: RayResource) -> dict:
    # Three times what the store holds: most are spilled as they are put, then restored together.
    refs = [ray.put(np.full(OBJECT_BYTES, i, np.uint8)) for i in range(OBJECTS)]
    if [int(array[0]) for array in ray.get(refs)] != list(range(OBJECTS)):
        raise AssertionError("an object came back from the disk with other contents")
    return io_workers()


def main() -> None:
    for workers in (None, 1):
        resource = RayResource(
            object_store_memory_mb=STORE_MB, num_cpus=1, spill_workers=workers, temp_dir=sys.argv[1]
        )
        result = dg.materialize([spilled], resources={"ray_cluster": resource})
        print(json.dumps({"spill_workers": workers, "started": result.output_for_node("spilled")}))


if __name__ == "__main__":
    main()
