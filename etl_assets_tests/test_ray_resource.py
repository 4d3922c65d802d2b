"""What `RayResource` sets up for the assets' Ray Data jobs, and the exchange they share."""

import gc
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from types import SimpleNamespace

import dagster as dg
import numpy as np
import pyarrow as pa
import pytest
import ray
import ray.data
from ray.data._internal.execution.resource_manager import ResourceManager

from etl_assets import dashboard_agent_standin, fixed_size_ray, ray_cluster, resources
from etl_assets.exchange_files import FOLDER, ScratchDir, node_scratch, read_bucket
from etl_assets.ray_steps import (
    _write_block,
    bucketed,
    exchange,
    from_tables,
    map_blocks,
    sorted_into_buckets,
)
from etl_assets.resources import RayResource
from etl_assets.transforms.common import hash_buckets
from etl_assets_tests.conftest import day

TASK_SECONDS = 1.0


def _busy(block: pa.Table) -> pa.Table:
    start = time.time()
    time.sleep(TASK_SECONDS)
    return pa.table({"pid": [os.getpid()], "start": [start], "end": [time.time()]})


@ray.remote(num_cpus=1)
def _hold_a_cpu() -> tuple[float, float]:
    start = time.time()
    time.sleep(0.3)
    return start, time.time()


def _until_both_cpus_are_free() -> None:
    """Until two plain tasks run at once: the resource's worker warm-up has let go of the CPUs."""
    for _ in range(30):
        (start1, end1), (start2, end2) = ray.get([_hold_a_cpu.remote() for _ in range(2)])
        if max(start1, start2) < min(end1, end2):
            return
    raise AssertionError("two Ray tasks never ran at once on the session's two CPUs")


def _two_blocks() -> list[dict]:
    ds = ray.data.from_arrow([pa.table({"x": [i]}) for i in range(2)])
    tasks = ds.map_batches(_busy, batch_format="pyarrow", batch_size=None).take_all()
    return sorted(tasks, key=lambda t: t["start"])


@dg.asset
def two_blocks(ray_cluster: RayResource) -> dg.MaterializeResult:
    # A cluster's first executions start Ray Data's actors and find their footing: one untimed
    # first. Then both CPUs free (the resource's worker warm-up done), so the measured tasks wait
    # for nothing but Ray Data's own scheduling.
    _two_blocks()
    _until_both_cpus_are_free()
    return dg.MaterializeResult(metadata={"tasks": _two_blocks()})


def two_tasks() -> tuple[dict, dict]:
    result = dg.materialize([two_blocks], resources={"ray_cluster": RayResource()})
    assert result.success
    first, second = result.asset_materializations_for_node("two_blocks")[0].metadata["tasks"].value
    return first, second


def _kill_ray_data_actors() -> None:
    for actor in ray.util.list_named_actors(all_namespaces=True):
        if actor["name"] in ("AutoscalingCoordinator", "datasets_stats_actor"):
            ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]))


# The control asks only once a minute: its tasks cannot overlap however slowly they are dispatched.
@pytest.mark.parametrize(
    ("fixed_size", "refresh"),
    [(True, 60.0), (False, resources.DATA_LIMITS_REFRESH_SECONDS), (False, 60.0)],
    ids=["fixed size", "connected, as set", "connected, control"],
)
def test_a_ray_data_job_runs_a_task_on_every_cpu_from_its_start(fixed_size, refresh, monkeypatch, request):
    """Ray 2.60 leaves a new Dataset execution on one task at a time until it learns its CPUs from
    Ray Data's autoscaling coordinator, which it asks again only a second after its start. On a
    Ray the platform started (of fixed size, as the session's) an execution reads them at once,
    however seldom it asks. On a Ray it only connected to, the resource has it ask every 10 ms.
    Two blocks on the session's two CPUs: their tasks overlap in both cases. With the coordinator
    asked once a minute (the control) they do not: should a later Ray answer at once, the control
    fails and the workaround can go."""
    if not fixed_size:  # the session's Ray as if this process had only connected to it
        monkeypatch.setattr(fixed_size_ray, "_FIXED_SIZE", set())
        # Ray Data then starts its two detached actors (about 400 MiB): not for the whole session.
        request.addfinalizer(_kill_ray_data_actors)
    # Whatever earlier tests set: only the resource's own setup may change it here.
    monkeypatch.setattr(ResourceManager, "GLOBAL_LIMITS_UPDATE_INTERVAL_S", 1.0)
    monkeypatch.setattr(resources, "DATA_LIMITS_REFRESH_SECONDS", refresh)
    first, second = two_tasks()
    overlap = second["start"] < first["end"]
    assert overlap == (fixed_size or refresh < 1), (first, second)


def _tag_bucket(rows: pa.Table, bucket: int) -> pa.Table:
    return rows.append_column("bucket", pa.array([bucket] * rows.num_rows, pa.int64()))


@pytest.mark.parametrize("on_disk", [True, False], ids=["through files", "through the object store"])
@pytest.mark.parametrize("buckets", [1, 3])
def test_an_exchange_gathers_every_row_of_each_key_in_one_bucket(buckets, on_disk):
    """Ray's one-return tasks store a returned list as one object: an exchange of one bucket (a
    one-CPU cluster's co_locate, a small day beside a big one) once gathered lists, not tables.
    Both ways of an exchange give each bucket the same rows, from one Dataset or from several;
    one block holds no row at all."""
    blocks = [pa.table({"k": pa.array(range(i, 40, 3), pa.int64())}) for i in range(3)]
    blocks.append(blocks[0].slice(0, 0))
    tagged = map_blocks(ray.data.from_arrow(blocks), bucketed(lambda t: t, "k", buckets))
    seen = exchange(tagged, buckets, _tag_bucket, on_disk=on_disk).take_all()
    sides = [
        map_blocks(ray.data.from_arrow(part), bucketed(lambda t: t, "k", buckets))
        for part in (blocks[:1], blocks[1:])
    ]
    assert sorted(exchange(sides, buckets, _tag_bucket, on_disk=on_disk).take_all(), key=str) == sorted(
        seen, key=str
    )
    assert sorted(r["k"] for r in seen) == list(range(40))
    bucket_of = {r["k"]: r["bucket"] for r in seen}
    assert bucket_of == {k: int(hash_buckets(pa.array([k], pa.int64()), buckets)[0]) for k in range(40)}


def test_on_one_node_an_exchange_goes_through_files_that_go_with_its_dataset():
    """The session's Ray is one node: an exchange writes a file per block with rows in a folder of
    the session's own, and the folder is removed once the exchange's Dataset is no longer held
    (after it ran, and when it never ran)."""
    session = ray._private.worker._global_node.get_session_dir_path()
    folders = os.path.join(session, FOLDER)
    before = set(os.listdir(folders)) if os.path.isdir(folders) else set()
    blocks = [pa.table({"k": pa.array(range(i, 1000, 4), pa.int64())}) for i in range(4)]
    tagged = map_blocks(ray.data.from_arrow(blocks), bucketed(lambda t: t, "k", 2))
    ds = exchange(tagged, 2, _tag_bucket)
    (mine,) = set(os.listdir(folders)) - before
    assert len(os.listdir(os.path.join(folders, mine))) == 4
    assert sorted(r["k"] for r in ds.take_all()) == list(range(1000))
    derived = map_blocks(ds, lambda rows: rows)
    del ds
    gc.collect()
    # A Dataset built on the exchange holds its files: it runs, twice, after the exchange's own went.
    for _ in range(2):
        assert sorted(r["k"] for r in derived.take_all()) == list(range(1000))
    del derived
    gc.collect()
    assert mine not in os.listdir(folders)
    unrun = exchange(tagged, 2, _tag_bucket)
    (mine,) = set(os.listdir(folders)) - before
    del unrun
    gc.collect()
    assert mine not in os.listdir(folders)


def test_exchange_files_keep_each_bucket_and_unify_a_blocks_dictionaries(tmp_path):
    """A block of two chunks whose dictionary columns differ (the IPC file format takes one
    dictionary per column) is written, and each bucket reads back exactly its rows; a bucket
    with no row reads back nothing."""
    chunks = [
        pa.table({"k": pa.array(ks, pa.int64()), "tag": pa.array(tags).dictionary_encode()})
        for ks, tags in (([0, 1, 2], ["x", "y", "x"]), ([3, 4], ["z", "x"]))
    ]
    block = pa.concat_tables(chunks)
    bucket = np.array([2, 0, 2, 0, 2])  # bucket 1 gets no row
    files = _write_block(sorted_into_buckets(block, bucket), 3, ScratchDir(str(tmp_path)))
    for b in range(3):
        (rows,) = read_bucket(files, b) or [block.slice(0, 0)]
        wanted = block.filter(pa.array(bucket == b))
        assert rows.column("k").to_pylist() == wanted.column("k").to_pylist()
        assert rows.column("tag").to_pylist() == wanted.column("tag").to_pylist()
    assert read_bucket(files, 1) == []


def test_an_exchange_removes_the_folders_of_drivers_that_are_gone():
    """A killed driver leaves its exchange's folder in the session: the next exchange on the node
    removes the folders whose driver (the pid in the name) no longer runs, and no other."""
    session = ray._private.worker._global_node.get_session_dir_path()
    folders = os.path.join(session, FOLDER)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    orphan = os.path.join(folders, f"{gone.pid}-orphan")
    live = os.path.join(folders, f"{os.getpid()}-live")
    for folder in (orphan, live):
        os.makedirs(folder)
        open(os.path.join(folder, "part.arrow"), "wb").close()
    scratch = node_scratch()
    assert os.path.isdir(scratch.path)
    assert not os.path.exists(orphan)
    assert os.path.isdir(live)
    shutil.rmtree(live)


def test_a_dataset_of_driver_tables_keeps_each_table_as_a_block_with_its_rows_and_types(monkeypatch):
    def no_remote_task(*args, **kwargs):
        raise AssertionError("a Dataset of the driver's tables waited for a Ray task")

    # ray.data.from_arrow asks a task for each table's metadata through this; from_tables must not.
    monkeypatch.setattr(ray.data.read_api, "cached_remote_fn", no_remote_task)
    tables = [
        pa.table({"files": pa.array([["a.parquet", "b.parquet"]], pa.list_(pa.string())), "n": [1]}),
        pa.table({"files": pa.array([[], ["c.parquet"]], pa.list_(pa.string())), "n": [2, 3]}),
    ]
    ds = from_tables(tables)
    assert ds.num_blocks() == 2
    assert ds.schema().base_schema == tables[0].schema
    assert [ray.get(ref) for ref in ds.to_arrow_refs()] == tables
    # One table is one block too, and an empty one keeps its schema (an empty window's read).
    empty = from_tables(tables[0].schema.empty_table())
    assert empty.num_blocks() == 1
    assert empty.count() == 0
    assert empty.schema().base_schema == tables[0].schema


def run_probe(module: str, *args: str) -> list[dict]:
    """``python -m module *args`` in a fresh process (the tests' own Ray is shared), with a temp dir
    for its private Ray last; the JSON lines it prints."""
    temp_dir = tempfile.mkdtemp(prefix="etl_probe_", dir="/tmp")  # Ray's socket paths must stay short
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    try:
        done = subprocess.run(
            [sys.executable, "-m", module, *args, temp_dir],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def private_ray_runs() -> tuple[dict, dict]:
    """Two runs, each with a private Ray of its own (``private_ray_probe``): Ray's default spill
    workers, then ``spill_workers=1``."""
    default, one = run_probe("etl_assets_tests.private_ray_probe")
    assert default["spill_workers"] is None and one["spill_workers"] == 1
    return default, one


def test_a_private_ray_runs_only_as_many_spill_and_restore_processes_as_set(private_ray_runs):
    """Each process Ray starts to spill objects to disk or restore them maps the whole object store.
    The private Ray spills and restores three times its store: left to Ray's default it starts
    several of each (the control: without it the assertion below could not fail), with
    ``spill_workers=1`` exactly one of each."""
    default, one = private_ray_runs
    assert default["io_workers"]["SpillWorker"] + default["io_workers"]["RestoreWorker"] > 2, default
    assert one["io_workers"] == {"SpillWorker": 1, "RestoreWorker": 1}, one


def test_a_private_ray_runs_without_the_helpers_a_run_has_no_use_for(private_ray_runs):
    """The autoscaler monitor, the log monitor and the API server are stopped once Ray has started
    (90-110 MiB each), and Ray Data starts neither of its helper actors (about 200 MiB each): its
    executions on a private Ray take its CPUs as they are and report no metrics. The controls:
    the probe sees Ray's own programs under it, and Ray Data as shipped on the same Ray starts
    both actors."""
    for run in private_ray_runs:
        assert {"gcs_server", "raylet"} <= set(run["programs"]), run
        assert run["helpers"] == [], run
        assert run["data_actors"] == [], run
        assert run["data_actors_as_shipped"] == ["AutoscalingCoordinator", "datasets_stats_actor"], run


def test_a_private_ray_runs_a_stand_in_for_the_minimal_dashboard_agent(private_ray_runs):
    """Ray installed without its dashboard runs a minimal dashboard agent that serves nothing (about
    105 MiB); the raylet runs the stand-in instead, which tells it the same: no port for any of
    the three services. The control: the probe sees the raylet's other agent, by the title Ray's
    agents give themselves. Both go with the raylet when the run shuts its Ray down."""
    for run in private_ray_runs:
        assert set(run["agents"]) == {"dashboard_agent_standin.py", "ray::RuntimeEnvAgent"}, run
        assert run["agent_ports"] == dict.fromkeys(dashboard_agent_standin.PORT_NAMES, "-1"), run
        assert run["agents_left"] == [], run


def test_spill_workers_must_be_at_least_one():
    # Zero would silently mean Ray's default of four, a negative number no spilling at all.
    with pytest.raises(ValueError, match="spill_workers"):
        RayResource(spill_workers=0)


def test_a_run_of_checks_alone_starts_ray_only_for_a_window_too_big_for_the_driver(sample_dir, tmp_path):
    """The UI's "Execute check" on a small day is judged in the driver without starting a private
    Ray (seconds of a run that lasts about one); a bigger window starts it when the check needs
    it, and the run closes it."""
    probe = "etl_assets_tests.check_only_probe"
    small, big = run_probe(probe, str(sample_dir), str(tmp_path / "w"), day(0).isoformat())
    waiting = "ray_cluster: a run of checks only, Ray starts if a check needs it"
    assert small["success"] and small["passed"], small
    assert small["ray_said"] == [waiting]
    assert big["success"] and big["passed"], big
    assert big["ray_said"][0] == waiting and big["ray_said"][1].startswith("ray_cluster: started a private")
    assert len(big["ray_said"]) == 2 and not big["ray_left_running"] and not small["ray_left_running"]
    # Both paths judge the same day alike.
    assert small["duplicate_keys"] == big["duplicate_keys"] == 0


@pytest.mark.parametrize(
    ("steps", "starts"),
    [
        (None, True),  # every step of the job
        (["orders_and_rejects", "orders_contract_checks"], True),
        (["orders_contract_checks", "orders_orders_reject_rate"], False),
    ],
)
def test_ray_starts_with_the_run_unless_every_step_is_a_check(steps, starts, monkeypatch):
    import etl_assets.checks.rules  # noqa: F401  (it names the check steps)

    started = []
    monkeypatch.setattr(RayResource, "ensure_started", lambda self: started.append(self))
    run = SimpleNamespace(step_keys_to_execute=steps)
    RayResource().setup_for_execution(SimpleNamespace(dagster_run=run, log=logging.getLogger(__name__)))
    assert len(started) == starts


def test_only_a_ray_started_with_the_resource_says_it_is_of_fixed_size():
    """The session's Ray was started by this process (marked as ``start_local_ray`` marks a
    private Ray) without the persistent head's resource: a run that only connected to such a Ray
    would leave Ray Data as shipped."""
    assert fixed_size_ray.on_fixed_size_ray()
    assert not fixed_size_ray.declares_fixed_size()
    assert ray.cluster_resources().get(ray_cluster.FIXED_SIZE_RESOURCE) is None
