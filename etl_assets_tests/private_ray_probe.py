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

from etl_assets import dashboard_agent_standin, fixed_size_ray
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
STANDIN = Path(dashboard_agent_standin.__file__).name


def agent_of(command: list[str]) -> str | None:
    """What a process is of the raylet's agents: its Ray title (Ray's agents name themselves
    ``ray::DashboardAgent`` and ``ray::RuntimeEnvAgent``) or the stand-in's file name."""
    if command and command[0].startswith("ray::") and command[0].endswith("Agent"):
        return command[0]
    return STANDIN if any(Path(arg).name == STANDIN for arg in command) else None


def ray_processes() -> dict:
    """Ray's spill and restore processes under this one, counted by kind (their titles say which),
    the helper scripts running under it, and its programs (the GCS and the raylet)."""
    io_workers = dict.fromkeys(IO_WORKERS, 0)
    helpers, programs, agents = [], set(), {}
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
        if agent_of(command):
            agents[agent_of(command)] = proc.pid
    return {
        "io_workers": io_workers,
        "helpers": sorted(helpers),
        "programs": sorted(programs),
        "agents": agents,
        "agent_ports": agent_ports(),
    }


def agent_ports() -> dict[str, str]:
    """What the raylet read as the ports of the dashboard agent's services (-1: not served)."""
    node = ray._private.worker._global_node
    folder = Path(node.get_session_dir_path())
    return {
        name: (folder / f"{name}_{node.node_id}").read_text() for name in dashboard_agent_standin.PORT_NAMES
    }


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
        during = result.output_for_node("spilled")
        # The run has shut its Ray down: the agents go with the raylet.
        agents_left = [name for name, pid in during["agents"].items() if _alive_after(pid, seconds=10)]
        print(json.dumps({"spill_workers": workers, **during, "agents_left": agents_left}))


def _alive_after(pid: int, seconds: float) -> bool:
    try:
        psutil.Process(pid).wait(timeout=seconds)
    except psutil.NoSuchProcess:
        return False
    except psutil.TimeoutExpired:
        return True
    return False


if __name__ == "__main__":
    main()
