"""Benchmark (floors): what Dagster and Ray cost before the platform does any work.

    python -m benchmarks.floors [--postgres-url postgresql+psycopg2://postgres@127.0.0.1:5432/DB]

One measurement for each performance target still unmet: the part of a run that Dagster and Ray
cost whatever the platform's code does, and what the platform's design adds to it (its imports,
its checks, its warm workers), so each target can be weighed against its floor:

* ``dagster_events`` (target 3, backfills): the backfill's asset graph (the same asset keys,
  daily partitions, single-run backfill policy and checks as ``benchmarks/backfill.py``) with
  bodies that only report: each asset one materialization per partition, each partitioned check
  one evaluation per partition (as the platform's checks report), each whole-table check one
  result; and the same graph without its checks. Each runs over 1 and over 30 days on each
  variant: the in-memory instance (what ``backfill.py`` uses), SQLite under a ``DAGSTER_HOME``
  (what ``make dev`` and ``make demo`` use), SQLite with one "planned" event per asset instead
  of one per partition (``DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS``; Dagster then no
  longer marks a failed run's partitions failed), SQLite with Dagster's consolidated event log
  (``ConsolidatedSqliteEventLogStorage``: one WAL-mode file), and with ``--postgres-url`` PostgreSQL (a
  database of its own, wiped before each run; needs dagster-postgres), with and without
  ``DAGSTER_EVENT_BATCH_SIZE`` (materializations then go in batches), and batched with one
  "planned" event per asset. The real one-day run of 300,000 orders is timed in the same process;
  the target's floor is that run, plus the graph's growth from 1 to 30 days, over that run.
* ``worker_start`` and ``process`` (target 2, fixed cost): a fresh interpreter importing Dagster
  and Ray alone, or the code location, then exiting; a new driver starting a private Ray, or
  connecting to a persistent Ray of this benchmark's own, and waiting for its first worker (Ray
  binds each worker process to one job, so every run starts its own), with a task that does
  nothing or with the platform's warm-up task. With Dagster's one-day cost on SQLite, two floors
  of a CLI run: Dagster and Ray alone (no checks, no platform module), and as designed.
* ``idle_tree`` (target 4, memory): summed RSS and PSS of a private Ray (its object store capped
  by ``--object-store-mb``, 512 MiB by default; an idle tree touches little of it) and its driver
  with the code location imported, once every worker has the platform's modules and one tiny Ray
  Data execution has started Ray Data's actors: the memory of a run before it holds any data.

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
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import psutil
import ray
import ray.data

from benchmarks import backfill
from benchmarks.instance_config import write_instance_yaml
from benchmarks.machine import machine
from benchmarks.private_ray import private_ray
from benchmarks.rss import Peak, rss_and_count_by_name, tree_memory
from benchmarks.samples import HERE, sample
from etl_assets import ray_cluster
from etl_assets.ray_steps import cluster_cpus
from etl_assets.resources import _warm_worker

REPO = HERE.parent
TARGET_RATIO = 1.5
TARGET_PRIVATE_SECONDS = 10.0
TARGET_PERSISTENT_SECONDS = 5.0
TARGET_RSS_MIB = 2048


def _reporting_asset(original: dg.AssetsDefinition) -> dg.AssetsDefinition:
    """``original``'s keys, deps, partitioning and pool, its body only reporting each key."""
    keys = [spec.key for spec in original.specs]

    @dg.multi_asset(
        name=original.node_def.name,
        specs=[dg.AssetSpec(spec.key, deps=spec.deps) for spec in original.specs],
        partitions_def=original.partitions_def,
        backfill_policy=original.backfill_policy,
        pool=original.op.pool,  # the real steps take a slot of the "ray" pool from the instance
    )
    def _asset(context):
        for key in keys:
            yield dg.MaterializeResult(asset_key=key)

    return _asset


def _reporting_check(original: dg.AssetChecksDefinition) -> dg.AssetChecksDefinition:
    """``original``'s step: its check keys, blocking and partitioning, its body only reporting a
    pass (one evaluation per partition, as ``etl_assets.checks.partitioned.per_partition`` yields
    them)."""
    specs = [
        dg.AssetCheckSpec(
            spec.name, asset=spec.asset_key, blocking=spec.blocking, partitions_def=spec.partitions_def
        )
        for spec in original.check_specs
    ]
    return _reporting_check_group(specs, original.node_def.name)


def _reporting_check_group(specs: list[dg.AssetCheckSpec], name: str) -> dg.AssetChecksDefinition:
    """One step named ``name`` for the checks of ``specs``, each reporting a pass for each
    partition of the run (or once, unpartitioned); a step of one check as ``@asset_check`` makes it."""
    if len(specs) == 1:
        (spec,) = specs
        return _reporting_single_check(spec, name)

    @dg.multi_asset_check(specs=specs, name=name, can_subset=True)
    def _checks(context):
        for spec in specs:
            if spec.key in context.selected_asset_check_keys:
                yield from _report(context, spec)
                if spec.partitions_def is not None:
                    yield dg.Output(None, output_name=spec.get_python_identifier())

    return _checks


def _reporting_single_check(spec: dg.AssetCheckSpec, name: str) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=spec.asset_key,
        name=spec.name,
        blocking=spec.blocking,
        partitions_def=spec.partitions_def,
    )
    def _check(context):
        yield from _report(context, spec)
        if spec.partitions_def is not None:
            yield dg.Output(None)

    if _check.node_def.name != name:
        raise ValueError(f"a step of one check is named {_check.node_def.name}, not {name}")
    return _check


def _report(context, spec: dg.AssetCheckSpec):
    if spec.partitions_def is None:
        yield dg.AssetCheckResult(asset_key=spec.asset_key, check_name=spec.name, passed=True)
        return
    for partition in context.partition_keys:
        yield dg.AssetCheckEvaluation(
            asset_key=spec.asset_key, check_name=spec.name, passed=True, partition=partition
        )


def reporting_graph(with_checks: bool = True) -> list:
    """The daily chain's backfill graph (``backfill.ASSETS`` and ``backfill.ASSET_CHECKS``, a step
    for each of its check steps) with reporting bodies, or its assets alone."""
    assets = [_reporting_asset(a) for a in backfill.ASSETS]
    return assets + ([_reporting_check(c) for c in backfill.ASSET_CHECKS] if with_checks else [])


# Dagster's settings that change which events a run writes, each pinned by a variant so an
# inherited environment cannot change what is measured.
EVENT_SETTINGS = (
    "DAGSTER_EVENT_BATCH_SIZE",
    "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS",
    "DAGSTER_EMIT_PLANNED_EVENTS_INDIVIDUALLY",
)


@dataclass(frozen=True)
class Variant:
    """An instance storage, and the Dagster settings (of ``EVENT_SETTINGS``) a run on it goes with."""

    name: str
    storage: str  # memory, sqlite, sqlite_consolidated or postgres
    settings: tuple[tuple[str, str], ...] = ()


MEMORY = Variant("memory", "memory")
SQLITE = Variant("sqlite", "sqlite")
# One "planned" event per asset instead of one per partition; Dagster then no longer marks the
# partitions of a failed run as failed.
PLANNED_SUBSET = ("DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS", "true")
# dagster-postgres writes a batch of materializations in one statement when Dagster batches events;
# "planned" events and check evaluations are still written one by one.
BATCHED = ("DAGSTER_EVENT_BATCH_SIZE", "1000")
SQLITE_PLANNED_SUBSET = Variant("sqlite_planned_subset", "sqlite", (PLANNED_SUBSET,))
# Dagster's consolidated SQLite event log: one file in WAL mode, each event written once.
SQLITE_CONSOLIDATED = Variant("sqlite_consolidated", "sqlite_consolidated")
POSTGRES = Variant("postgres", "postgres")
POSTGRES_BATCHED = Variant("postgres_batched", "postgres", (BATCHED,))
POSTGRES_BATCHED_PLANNED_SUBSET = Variant(
    "postgres_batched_planned_subset", "postgres", (BATCHED, PLANNED_SUBSET)
)


def _instance(variant: Variant, home: Path, postgres_url: str | None) -> dg.DagsterInstance:
    """A new instance for one run. PostgreSQL's database is wiped first, so every run starts from
    the same empty history, as the in-memory and SQLite instances do."""
    if variant.storage == "memory":
        return dg.DagsterInstance.ephemeral()
    extra = {"storage": {"postgres": {"postgres_url": postgres_url}}} if variant.storage == "postgres" else {}
    event_log = "consolidated" if variant.storage == "sqlite_consolidated" else "sharded"
    write_instance_yaml(home, event_log, extra)
    instance = dg.DagsterInstance.from_config(str(home))
    if variant.storage == "postgres":
        instance.wipe()
    return instance


@contextmanager
def _dagster_settings(variant: Variant) -> Iterator[None]:
    """Exactly ``variant``'s event settings while its run goes (Dagster reads them at each event)."""
    if not {name for name, _ in variant.settings} <= set(EVENT_SETTINGS):
        raise ValueError(f"{variant.name}: only {EVENT_SETTINGS} are pinned and restored")
    before = {name: os.environ.pop(name, None) for name in EVENT_SETTINGS}
    os.environ.update(dict(variant.settings))
    try:
        yield
    finally:
        for name, value in before.items():
            os.environ.pop(name, None)
            if value is not None:
                os.environ[name] = value


def _run_graph(graph: list, variant: Variant, days: int, postgres_url: str | None) -> tuple[float, int]:
    """Wall seconds and event count of one run of ``graph`` over ``days`` days on a new instance."""
    home = Path(tempfile.mkdtemp(prefix="etl_floor_home_"))
    try:
        instance = _instance(variant, home, postgres_url)
        try:
            with _dagster_settings(variant):
                start = time.perf_counter()
                result = dg.materialize(graph, instance=instance, tags=backfill.range_tags(0, days - 1))
                wall = time.perf_counter() - start
            if not result.success:
                raise RuntimeError(f"the reporting graph's {days}-day run failed on {variant.name}")
            return wall, len(instance.all_logs(result.run_id))
        finally:
            instance.dispose()
    finally:
        shutil.rmtree(home, ignore_errors=True)


def dagster_events(graph: list, variants: list[Variant], postgres_url: str | None, repeats: int) -> dict:
    """Per variant: the best one-day and 30-day wall seconds of ``graph``, their event counts, and
    its growth from 1 to 30 days, the smallest of each repeat's pair (a one-day run and a 30-day
    run in a row), so the machine's minute-to-minute speed does not widen it."""
    found: dict = {}
    for variant in variants:
        pairs = []
        events: dict[int, int] = {}
        for _ in range(repeats):
            pair = {}
            for days in (1, 30):
                pair[days], events[days] = _run_graph(graph, variant, days, postgres_url)
            pairs.append(pair)
        growth = min(pair[30] - pair[1] for pair in pairs)
        found[variant.name] = {
            "one_day_seconds": round(min(pair[1] for pair in pairs), 3),
            "thirty_days_seconds": round(min(pair[30] for pair in pairs), 3),
            "growth_seconds": round(growth, 3),
            "one_day_events": events[1],
            "thirty_days_events": events[30],
            "ms_per_extra_event": round(1000 * growth / (events[30] - events[1]), 2),
            "all_seconds": [{f"{d}_day": round(w, 3) for d, w in pair.items()} for pair in pairs],
        }
        print(
            f"  dagster_events {len(graph)} nodes, {variant.name}: {json.dumps(found[variant.name])}",
            flush=True,
        )
    return found


def real_one_day(repeats: int) -> float:
    """Best wall seconds of the real one-day run of ``backfill.py`` (300,000 orders), on a warm Ray."""
    one = sample(HERE / "work" / "backfill_1x300000", 300_000, 5_000, 1)
    out = HERE / "work" / "floors_warehouse"
    walls = []
    for i in range(repeats + 1):
        shutil.rmtree(out, ignore_errors=True)
        with _dagster_settings(MEMORY):
            wall, _ = backfill.run(one, out, 0, 0)
        if i:  # the first run starts Ray's workers and Ray Data's actors
            walls.append(wall)
    shutil.rmtree(out, ignore_errors=True)
    return min(walls)


def idle_tree(settle_seconds: float = 2.0) -> dict:
    """The memory of the running private Ray and this driver once every worker is warm and Ray
    Data's actors are up. The driver has the code location imported (``benchmarks.backfill``
    imports ``etl_assets.definitions``), as a run's driver has, and the benchmarks' own modules (a
    few MiB). (How long the warm-up takes is the private drivers' business, in ``worker_start``.)"""
    ray.get([_warm_worker.remote() for _ in range(cluster_cpus())])
    ray.data.range(cluster_cpus(), override_num_blocks=cluster_cpus()).map_batches(lambda b: b).materialize()
    time.sleep(settle_seconds)  # workers done with their task, Ray Data's executor shut down
    rss, pss, per_pid = tree_memory(psutil.Process(), with_pss=True)
    sizes, processes = rss_and_count_by_name(per_pid)
    peak = Peak(bytes=rss, pss_bytes=pss, breakdown=sizes, processes=processes)
    return {
        "rss_mib": peak.mib,
        "pss_mib": peak.pss_mib,
        "rss_mib_by_process": peak.breakdown_mib(),
        "processes": processes,
    }


# A new driver, on a persistent Ray (``RAY_ADDRESS``) or starting a private one as the other
# benchmarks do (``private_ray``): how long to connect or start, and until its first worker has
# done a task (and all of them), a task that does nothing or the platform's warm-up task
# importing its modules.
WORKER_START = """
import json, os, sys, time
from contextlib import contextmanager
import ray
from benchmarks.private_ray import private_ray
from etl_assets.ray_steps import cluster_cpus
from etl_assets.resources import _warm_worker

@ray.remote(num_cpus=1)
def nothing():
    pass

@contextmanager
def persistent_ray():
    start = time.perf_counter()
    ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False)
    try:
        yield time.perf_counter() - start
    finally:
        ray.shutdown()

kind, where = sys.argv[1], sys.argv[2]
task = nothing if kind == "bare" else _warm_worker
with private_ray(512) if where == "private" else persistent_ray() as connect:
    started = time.perf_counter()
    pending = [task.remote() for _ in range(cluster_cpus())]
    ray.wait(pending, num_returns=1)
    first = time.perf_counter()
    ray.get(pending)
    done = time.perf_counter()
print(json.dumps({
    "connect_seconds": connect,
    "first_worker_seconds": first - started,
    "all_workers_seconds": done - started,
}))
"""


# A fresh interpreter importing Dagster and Ray only, or the whole code location, then exiting.
IMPORTS = {
    "bare": "import dagster, ray, ray.data",
    "code_location": "import etl_assets.definitions",
}


def process_start_and_exit(repeats: int) -> dict:
    """For each of ``IMPORTS``: seconds for a fresh interpreter to import it, and to exit afterwards
    (Python tearing down the modules it loaded); every CLI run pays both."""
    found = {}
    for name, imports in IMPORTS.items():
        runs = []
        for _ in range(repeats):
            start = time.time()
            done = subprocess.run(
                [sys.executable, "-c", f"import time; {imports}; print(time.time(), flush=True)"],
                cwd=REPO,
                capture_output=True,
                text=True,
                check=True,
            )
            end = time.time()
            imported = float(done.stdout.strip().splitlines()[-1])
            runs.append({"start_seconds": imported - start, "exit_seconds": end - imported})
        best = min(runs, key=lambda r: r["start_seconds"] + r["exit_seconds"])
        found[name] = {key: round(value, 3) for key, value in best.items()}
    return found


def _drivers(where: str, env: dict[str, str], repeats: int) -> dict:
    """The best of ``repeats`` new drivers ``where`` (persistent or private), per task kind."""
    found = {}
    for kind in ("bare", "platform"):
        runs = []
        for _ in range(repeats):
            done = subprocess.run(
                [sys.executable, "-c", WORKER_START, kind, where],
                env=env,
                cwd=REPO,
                capture_output=True,
                text=True,
            )
            if done.returncode:
                raise RuntimeError(f"the worker start-up driver failed: {done.stderr[-2000:]}")
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        best = min(runs, key=lambda r: r["connect_seconds"] + r["first_worker_seconds"])
        found[kind] = {key: round(value, 3) for key, value in best.items()}
    return found


def worker_start(repeats: int) -> dict:
    """New drivers starting a private Ray, and new drivers on a persistent Ray of this benchmark's
    own (one untimed driver first: it also waits for the new cluster's own start-up)."""
    found = {"private": _drivers("private", dict(os.environ), repeats)}
    saved_state = ray_cluster.STATE
    ray_cluster.STATE = HERE / "work" / "floors_ray_state"
    try:
        if ray_cluster.running_pid() is not None:
            raise RuntimeError(f"a Ray from {ray_cluster.STATE} is already running; stop it first")
        env = {**os.environ, **ray_cluster.up(None, 1024)}
        try:
            _drivers("persistent", env, 1)
            found["persistent"] = _drivers("persistent", env, repeats)
        finally:
            ray_cluster.down()
    finally:
        ray_cluster.STATE = saved_state
    return found


def ratio_floor(one_day: float, whole: dict, extra: dict, variant: str) -> float:
    """The 30-day run's floor over the one-day run on ``variant``: the real one-day run (timed on
    the in-memory instance) plus ``extra``'s growth from 1 to 30 days, over that one-day run.
    ``whole`` is the whole graph's cost by variant: on SQLite or PostgreSQL the one-day run pays
    that storage's one-day cost instead of the in-memory one (the real run's events weigh more
    than the reporting graph's, so this understates its denominator a little and the ratio is an
    estimate rather than a bound)."""
    day = one_day + whole[variant]["one_day_seconds"] - whole["memory"]["one_day_seconds"]
    return round((day + extra[variant]["growth_seconds"]) / day, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--object-store-mb", type=int, default=512)
    parser.add_argument(
        "--postgres-url",
        default=None,
        help="also measure Dagster on PostgreSQL: a database of its own, wiped before each run",
    )
    parser.add_argument("--out", type=Path, default=HERE / "results" / "floors.json")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")

    with private_ray(object_store_mb=args.object_store_mb):
        idle = idle_tree()
        print(f"  idle_tree: {json.dumps(idle)}", flush=True)
        one_day = real_one_day(args.repeats)
        print(f"  real one-day run: {one_day:.2f} s", flush=True)
    variants = [MEMORY, SQLITE, SQLITE_PLANNED_SUBSET, SQLITE_CONSOLIDATED]
    if args.postgres_url:
        variants += [POSTGRES, POSTGRES_BATCHED, POSTGRES_BATCHED_PLANNED_SUBSET]
    events = dagster_events(reporting_graph(), variants, args.postgres_url, args.repeats)
    # Without the checks: what the per-partition materializations and "planned" events cost alone.
    assets_only = dagster_events(
        reporting_graph(with_checks=False), variants, args.postgres_url, args.repeats
    )
    workers = worker_start(args.repeats)
    print(f"  worker_start: {json.dumps(workers)}", flush=True)
    process = process_start_and_exit(args.repeats)
    print(f"  process: {json.dumps(process)}", flush=True)

    def fixed_cost_floor(imports: str, dagster: dict, ray_start: dict) -> float:
        # Parts in a row: the resource starts its workers' warm-up only after Dagster has started
        # the run, and the first step waits for a worker.
        start_exit = process[imports]["start_seconds"] + process[imports]["exit_seconds"]
        ray_part = ray_start["connect_seconds"] + ray_start["first_worker_seconds"]
        return round(start_exit + dagster["sqlite"]["one_day_seconds"] + ray_part, 3)

    report = {
        "benchmark": "floors",
        "machine": machine(),
        "dagster_events": {
            "graph": {
                "assets": sum(len(list(a.specs)) for a in backfill.ASSETS),
                "check_steps": len(backfill.ASSET_CHECKS),
                "partitioned_checks": sum(
                    1 for c in backfill.ASSET_CHECKS for s in c.check_specs if s.partitions_def
                ),
                "whole_table_checks": sum(
                    1 for c in backfill.ASSET_CHECKS for s in c.check_specs if not s.partitions_def
                ),
            },
            "by_variant": events,
            "assets_only_by_variant": assets_only,
        },
        "target_3_backfill": {
            "target_ratio": TARGET_RATIO,
            "real_one_day_seconds": round(one_day, 3),
            # With a result per partition per check, as the platform's checks report.
            "ratio_floor_by_variant": {v: ratio_floor(one_day, events, events, v) for v in events},
            # As if the checks cost nothing at all, not even their per-partition results.
            "ratio_floor_without_checks_by_variant": {
                v: ratio_floor(one_day, events, assets_only, v) for v in assets_only
            },
        },
        "process": process,
        "worker_start": workers,
        "target_2_fixed_cost": {
            "floor_is": "a fresh interpreter's imports and exit + Dagster's one-day cost on SQLite + Ray's "
            "start-up or connection + the first worker's task (parts in a row)",
            # Dagster and Ray alone: no platform module, no check, a worker that imports nothing.
            "bare": {
                where: fixed_cost_floor("bare", assets_only, workers[where]["bare"])
                for where in ("private", "persistent")
            },
            # With what the platform's design adds: its imports, its 25 check steps, warm workers.
            "as_designed": {
                where: fixed_cost_floor("code_location", events, workers[where]["platform"])
                for where in ("private", "persistent")
            },
            "target_seconds": {"private": TARGET_PRIVATE_SECONDS, "persistent": TARGET_PERSISTENT_SECONDS},
        },
        "idle_tree": {"object_store_mb": args.object_store_mb, **idle},
        "target_4_memory": {"target_rss_mib": TARGET_RSS_MIB, "idle_rss_mib": idle["rss_mib"]},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    summary = {key: report[key] for key in ("target_3_backfill", "target_2_fixed_cost")}
    print(json.dumps({**summary, "target_4_idle_rss_mib": idle["rss_mib"]}))


if __name__ == "__main__":
    main()
