"""Benchmark (floors): what Dagster and Ray cost before the platform does any work.

    python -m benchmarks.floors [--postgres-url postgresql+psycopg2://postgres@127.0.0.1:5432/DB]

One measurement for each performance target still unmet, each a cost the platform's own code
does not take part in, so a lower bound for that target with the pinned Dagster and Ray:

* ``dagster_events`` (target 3, backfills): the backfill's asset graph (the same asset keys,
  daily partitions, single-run backfill policy and checks as ``benchmarks/backfill.py``) with
  bodies that only report: each asset one materialization per partition, each partitioned check
  one evaluation per partition, each whole-table check one result. It runs over 1 and over 30 days
  on each kind of instance storage: in memory (what ``backfill.py`` uses), SQLite under a
  ``DAGSTER_HOME`` (what ``make dev`` and ``make demo`` use) and PostgreSQL (``--postgres-url``,
  an existing database; needs dagster-postgres). The real one-day run of 300,000 orders is timed
  in the same process (on the in-memory instance), and the floor of the target's ratio is what
  the 30-day run would take if its steps did exactly the one-day run's work: (one day + Dagster's
  30-day cost - its one-day cost) / one day, where on SQLite and PostgreSQL the one-day run also
  pays that storage's one-day cost instead of the in-memory one. The same graph without its
  checks gives the floor left if the checks cost nothing, not even their per-partition results.
* ``worker_start`` (target 2, fixed cost): a new driver connecting to a persistent Ray (as a run
  from the CLI does with ``make ray-up``) and waiting until one worker per CPU has the platform's
  modules imported. Ray binds each worker process to one job, so every run starts its own. With a
  fresh interpreter importing the code location and Dagster's one-day cost on SQLite, that is the
  floor of a CLI run on a persistent Ray.
* ``idle_tree`` (target 4, memory): summed RSS and PSS of a private Ray (the object store capped as
  in ``benchmarks/memory.py``) and its driver with the code location imported, once every worker
  has the platform's modules and one tiny Ray Data execution has started Ray Data's actors: the
  memory of a run before it holds any data.

Writes ``benchmarks/results/floors.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import dagster as dg
import psutil
import ray
import ray.data
import yaml

from benchmarks import backfill
from benchmarks.machine import machine
from benchmarks.private_ray import private_ray
from benchmarks.rss import Peak, tree_memory
from benchmarks.samples import DAY, HERE, sample
from etl_assets import ray_cluster
from etl_assets.ray_steps import cluster_cpus
from etl_assets.resources import _warm_worker

REPO = HERE.parent
TARGET_RATIO = 1.5
TARGET_PRIVATE_SECONDS = 10.0
TARGET_PERSISTENT_SECONDS = 5.0
TARGET_RSS_MIB = 2048


def _reporting_asset(original: dg.AssetsDefinition) -> dg.AssetsDefinition:
    """``original``'s keys, deps and partitioning, its body only reporting each key."""
    keys = [spec.key for spec in original.specs]

    @dg.multi_asset(
        name=original.node_def.name,
        specs=[dg.AssetSpec(spec.key, deps=spec.deps) for spec in original.specs],
        partitions_def=original.partitions_def,
        backfill_policy=original.backfill_policy,
    )
    def _asset(context):
        for key in keys:
            yield dg.MaterializeResult(asset_key=key)

    return _asset


def _reporting_check(original: dg.AssetChecksDefinition) -> dg.AssetChecksDefinition:
    """``original``'s check key, blocking and partitioning, its body only reporting a pass (one
    evaluation per partition, as ``etl_assets.checks.partitioned.per_partition`` yields them)."""
    (spec,) = original.check_specs
    partitions_def = original.partitions_def

    @dg.asset_check(
        asset=spec.asset_key, name=spec.name, blocking=spec.blocking, partitions_def=partitions_def
    )
    def _check(context):
        if partitions_def is None:
            yield dg.AssetCheckResult(passed=True)
            return
        for partition in context.partition_keys:
            yield dg.AssetCheckEvaluation(
                asset_key=spec.asset_key, check_name=spec.name, passed=True, partition=partition
            )
        yield dg.Output(None)

    return _check


def reporting_graph(with_checks: bool = True) -> list:
    assets = [_reporting_asset(a) for a in backfill.ASSETS]
    return assets + ([_reporting_check(c) for c in backfill.ASSET_CHECKS] if with_checks else [])


def _range_tags(days: int) -> dict[str, str]:
    return {
        "dagster/asset_partition_range_start": DAY.isoformat(),
        "dagster/asset_partition_range_end": (DAY + timedelta(days=days - 1)).isoformat(),
    }


def _instance(storage: str, home: Path, postgres_url: str | None) -> dg.DagsterInstance:
    if storage == "memory":
        return dg.DagsterInstance.ephemeral()
    config = yaml.safe_load((REPO / "dagster.yaml").read_text())
    if storage == "postgres":
        config["storage"] = {"postgres": {"postgres_url": postgres_url}}
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    return dg.DagsterInstance.from_config(str(home))


def dagster_events(graph: list, storages: list[str], postgres_url: str | None, repeats: int) -> dict:
    """Best wall seconds and event count of a reporting graph over 1 and 30 days, per storage."""
    found: dict = {}
    for storage in storages:
        walls: dict[int, list[float]] = {1: [], 30: []}
        events: dict[int, int] = {}
        for _ in range(repeats):
            for days in walls:
                home = Path(tempfile.mkdtemp(prefix="etl_floor_home_"))
                try:
                    instance = _instance(storage, home, postgres_url)
                    start = time.perf_counter()
                    result = dg.materialize(graph, instance=instance, tags=_range_tags(days))
                    walls[days].append(time.perf_counter() - start)
                    if not result.success:
                        raise RuntimeError(f"the reporting graph's {days}-day run failed on {storage}")
                    events[days] = len(instance.all_logs(result.run_id))
                    instance.dispose()
                finally:
                    shutil.rmtree(home, ignore_errors=True)
        one, thirty = min(walls[1]), min(walls[30])
        found[storage] = {
            "one_day_seconds": round(one, 3),
            "thirty_days_seconds": round(thirty, 3),
            "one_day_events": events[1],
            "thirty_days_events": events[30],
            "ms_per_extra_event": round(1000 * (thirty - one) / (events[30] - events[1]), 2),
            "all_seconds": {f"{d}_days": [round(w, 3) for w in ws] for d, ws in walls.items()},
        }
        print(f"  dagster_events {len(graph)} nodes, {storage}: {json.dumps(found[storage])}", flush=True)
    return found


def real_one_day(repeats: int) -> float:
    """Best wall seconds of the real one-day run of ``backfill.py`` (300,000 orders), on a warm Ray."""
    one = sample(HERE / "work" / "backfill_1x300000", 300_000, 5_000, 1)
    out = HERE / "work" / "floors_warehouse"
    walls = []
    for i in range(repeats + 1):
        shutil.rmtree(out, ignore_errors=True)
        start = time.perf_counter()
        backfill.run(one, out, 0, 0)
        if i:  # the first run starts Ray's workers and Ray Data's actors
            walls.append(time.perf_counter() - start)
    shutil.rmtree(out, ignore_errors=True)
    return min(walls)


def idle_tree(settle_seconds: float = 2.0) -> dict:
    """Seconds for a new private Ray to have one warm worker per CPU, and the memory of that Ray
    and this driver once every worker is warm and Ray Data's
    actors are up. The driver has the code location imported (``benchmarks.backfill`` imports
    ``etl_assets.definitions``), as a run's driver has."""
    start = time.perf_counter()
    ray.get([_warm_worker.remote() for _ in range(cluster_cpus())])
    warm = time.perf_counter() - start
    ray.data.range(cluster_cpus(), override_num_blocks=cluster_cpus()).map_batches(lambda b: b).materialize()
    time.sleep(settle_seconds)  # workers done with their task, Ray Data's executor shut down
    rss, pss, per_pid = tree_memory(psutil.Process(), with_pss=True)
    names: dict[str, int] = {}
    for pid, size in per_pid.items():
        try:
            title = psutil.Process(pid).cmdline()[:1] or [psutil.Process(pid).name()]
        except psutil.Error:
            continue
        name = title[0].rsplit("/", 1)[-1][:40]
        names[name] = names.get(name, 0) + size
    peak = Peak(bytes=rss, pss_bytes=pss, breakdown=names)
    return {
        "workers_warm_seconds": round(warm, 3),
        "rss_mib": peak.mib,
        "pss_mib": peak.pss_mib,
        "rss_mib_by_process": peak.breakdown_mib(),
    }


WORKER_START = """
import json, os, time
import ray
from etl_assets.ray_steps import cluster_cpus
from etl_assets.resources import _warm_worker
start = time.perf_counter()
ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
connected = time.perf_counter()
ray.get([_warm_worker.remote() for _ in range(cluster_cpus())])
warm = time.perf_counter()
print(json.dumps({"connect_seconds": connected - start, "workers_warm_seconds": warm - connected}))
"""

IMPORT_AND_EXIT = "import time, etl_assets.definitions; print(time.time(), flush=True)"


def process_start_and_exit(repeats: int) -> dict:
    """Seconds for a fresh interpreter to import the code location, and for it to exit afterwards
    (Python tearing down the modules it loaded), as every CLI run pays both."""
    runs = []
    for _ in range(repeats):
        start = time.time()
        done = subprocess.run(
            [sys.executable, "-c", IMPORT_AND_EXIT], cwd=REPO, capture_output=True, text=True, check=True
        )
        end = time.time()
        imported = float(done.stdout.strip().splitlines()[-1])
        runs.append({"start_seconds": imported - start, "exit_seconds": end - imported})
    best = min(runs, key=lambda r: r["start_seconds"] + r["exit_seconds"])
    return {key: round(value, 3) for key, value in best.items()}


def worker_start(repeats: int) -> dict:
    """Seconds for a new driver to connect to a persistent Ray and to have one warm worker per CPU."""
    ray_cluster.STATE = HERE / "work" / "ray_state"
    env = {**os.environ, **ray_cluster.up(None, 1024)}
    runs = []
    try:
        for _ in range(repeats + 1):
            done = subprocess.run(
                [sys.executable, "-c", WORKER_START], env=env, cwd=REPO, capture_output=True, text=True
            )
            if done.returncode:
                raise RuntimeError(f"the worker start-up driver failed: {done.stderr[-2000:]}")
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    finally:
        ray_cluster.down()
    runs = runs[1:]  # the first driver also waits for the new cluster's own start-up
    best = min(runs, key=lambda r: r["connect_seconds"] + r["workers_warm_seconds"])
    return {
        "connect_seconds": round(best["connect_seconds"], 3),
        "workers_warm_seconds": round(best["workers_warm_seconds"], 3),
        "all": [{k: round(v, 3) for k, v in r.items()} for r in runs],
    }


def ratio_floor(one_day: float, whole: dict, extra: dict, storage: str) -> float:
    """The 30-day run's floor over the one-day run on ``storage``: the real one-day run (timed on
    the in-memory instance) plus ``extra``'s growth from 1 to 30 days, over that one-day run.
    ``whole`` is the whole graph's cost by storage: on SQLite or PostgreSQL the one-day run pays
    that storage's one-day cost instead of the in-memory one."""
    day = one_day + whole[storage]["one_day_seconds"] - whole["memory"]["one_day_seconds"]
    grown = extra[storage]["thirty_days_seconds"] - extra[storage]["one_day_seconds"]
    return round((day + grown) / day, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--object-store-mb", type=int, default=512)
    parser.add_argument(
        "--postgres-url", default=None, help="also measure Dagster on PostgreSQL (an existing database)"
    )
    parser.add_argument("--out", type=Path, default=HERE / "results" / "floors.json")
    args = parser.parse_args()

    with private_ray(object_store_mb=args.object_store_mb) as ray_start:
        idle = idle_tree()
        print(f"  idle_tree: {json.dumps(idle)}", flush=True)
        one_day = real_one_day(args.repeats)
        print(f"  real one-day run: {one_day:.2f} s", flush=True)
    storages = ["memory", "sqlite"] + (["postgres"] if args.postgres_url else [])
    events = dagster_events(reporting_graph(), storages, args.postgres_url, args.repeats)
    # Without the checks: what Dagster's per-partition materializations and planned events cost alone.
    assets_only = dagster_events(
        reporting_graph(with_checks=False), storages, args.postgres_url, args.repeats
    )
    workers = worker_start(args.repeats)
    print(f"  worker_start: {json.dumps(workers)}", flush=True)
    process = process_start_and_exit(args.repeats)
    print(f"  process: {json.dumps(process)}", flush=True)

    # Every CLI run: the interpreter's start and exit, and Dagster's own cost of a one-day run on
    # the SQLite instance the CLI uses; then reaching Ray and having warm workers.
    common = process["start_seconds"] + process["exit_seconds"] + events["sqlite"]["one_day_seconds"]
    floor_persistent = common + workers["connect_seconds"] + workers["workers_warm_seconds"]
    floor_private = common + ray_start + idle["workers_warm_seconds"]
    report = {
        "benchmark": "floors",
        "machine": machine(),
        "dagster_events": {
            "graph": {
                "assets": sum(len(list(a.specs)) for a in backfill.ASSETS),
                "partitioned_checks": sum(1 for c in backfill.ASSET_CHECKS if c.partitions_def),
                "whole_table_checks": sum(1 for c in backfill.ASSET_CHECKS if not c.partitions_def),
            },
            "by_storage": events,
            "assets_only_by_storage": assets_only,
        },
        "target_3_backfill": {
            "target_ratio": TARGET_RATIO,
            "real_one_day_seconds": round(one_day, 3),
            "ratio_floor_by_storage": {s: ratio_floor(one_day, events, events, s) for s in events},
            # As if the checks cost nothing at all, not even their per-partition evaluations.
            "ratio_floor_without_checks_by_storage": {
                s: ratio_floor(one_day, events, assets_only, s) for s in assets_only
            },
        },
        "process": process,
        "worker_start_persistent_ray": workers,
        "private_ray_start_seconds": round(ray_start, 3),
        "target_2_fixed_cost": {
            "floor_is": "process start and exit + Dagster's one-day cost on SQLite + Ray start-up "
            "or connection + one warm worker per CPU",
            "private_ray": {
                "target_seconds": TARGET_PRIVATE_SECONDS,
                "floor_seconds": round(floor_private, 3),
            },
            "persistent_ray": {
                "target_seconds": TARGET_PERSISTENT_SECONDS,
                "floor_seconds": round(floor_persistent, 3),
            },
        },
        "idle_tree": {"object_store_mb": args.object_store_mb, **idle},
        "target_4_memory": {"target_rss_mib": TARGET_RSS_MIB, "idle_rss_mib": idle["rss_mib"]},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(
        json.dumps(
            {
                "target_3_ratio_floor": report["target_3_backfill"]["ratio_floor_by_storage"],
                "target_2_floor_seconds": {
                    k: v["floor_seconds"] for k, v in report["target_2_fixed_cost"].items() if k != "floor_is"
                },
                "target_4_idle_rss_mib": idle["rss_mib"],
            }
        )
    )


if __name__ == "__main__":
    main()
