"""Benchmark (fixed cost): the whole daily chain for one day of 1,000 orders from the Dagster CLI.

    python -m benchmarks.fixed_cost

Runs ``dagster asset materialize`` exactly as the README does (raw_customers, customers, orders,
orders_rejects, customer_orders, daily_customer_metrics and their checks) in a fresh process, first
with a private Ray started by the run, then connected to a persistent local Ray (``make ray-up``)
through ``RAY_ADDRESS``, on the repository's ``dagster.yaml`` and, taking turns with it, on the
same with Dagster's consolidated SQLite event log. Each wall time is split into process start
(interpreter and imports), Ray (start-up or connection), the Ray jobs (reads, transforms, writes:
I/O) and Dagster (the rest: run and event storage, checks, metadata), read from the run's own
event log, and its timeline: the time to each of its marks (run created, run started, resources
ready, first step done, last step done, run ended, process exited).
Writes ``benchmarks/results/fixed_cost.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from dagster import DagsterEventType, DagsterInstance

from benchmarks.backfill import ASSET_STEPS
from benchmarks.instance_config import EVENT_LOGS, write_instance_yaml
from benchmarks.machine import machine
from benchmarks.samples import DAY, HERE, sample
from etl_assets import ray_cluster

REPO = HERE.parent
BIN = Path(sys.executable).parent
SELECT = "raw_customers,customers,orders,orders_rejects,customer_orders,daily_customer_metrics"


def import_seconds(env: dict) -> float:
    """A fresh interpreter importing the code location: what any CLI run pays before Dagster starts."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import etl_assets.definitions"], env=env, check=True, cwd=REPO)
    return time.perf_counter() - start


RAY_READY = re.compile(r"ray_cluster: (?:started a private local Ray|connected to Ray) in ([0-9.]+) s")


def timeline(events: list, created: float, started: float, ended: float) -> dict:
    """Where the run's wall went, phase after phase, from its events' timestamps: before Dagster
    created the run (interpreter, imports, code location, the run's record), Dagster's "planned"
    events, the resources' start (Ray's connection or start-up and the workers' warm-up sent),
    the first step (which waits for the run's new Ray workers), every later step, the end of the
    run after its last step (the resources' teardown) and the process's exit."""

    def first(kind: DagsterEventType) -> float:
        return next(e.timestamp for e in events if e.dagster_event and e.dagster_event.event_type == kind)

    step_ends = [
        e.timestamp
        for e in events
        if e.dagster_event and e.dagster_event.event_type == DagsterEventType.STEP_SUCCESS
    ]
    marks = {
        "run_created": created,
        "run_started": first(DagsterEventType.RUN_START),
        "resources_ready": first(DagsterEventType.RESOURCE_INIT_SUCCESS),
        "first_step_done": step_ends[0],
        "last_step_done": step_ends[-1],
        "run_ended": first(DagsterEventType.RUN_SUCCESS),
        "process_exited": ended,
    }
    phases, previous = {}, started
    for name, at in marks.items():
        phases[f"to_{name}_seconds"] = round(at - previous, 3)
        previous = at
    return {"events": len(events), "steps": len(step_ends), **phases}


def run_split(home: Path, started: float, ended: float) -> dict:
    """Ray's share (the resource logs how long it took to start or connect) and the Ray jobs'
    share (every materialization's ``ray/wall_seconds``) of the latest run, from its event log,
    and its timeline (``timeline``); ``started`` and ``ended`` bound the CLI process (epoch s)."""
    instance = DagsterInstance.from_config(str(home))
    run = instance.get_runs(limit=1)[0]
    created = instance.get_run_record_by_id(run.run_id).create_timestamp.timestamp()
    ray_seconds = 0.0
    # By step: a multi-asset's one Ray job is reported on each of its tables (orders and
    # orders_rejects share one), and must be counted once.
    jobs: dict[str, float] = {}
    steps: dict[str, float] = {}
    events = instance.all_logs(run.run_id)
    for event in events:
        if event.dagster_event and event.dagster_event.event_type == DagsterEventType.STEP_SUCCESS:
            steps[event.step_key] = event.dagster_event.event_specific_data.duration_ms / 1000
        found = RAY_READY.search(event.user_message or "")
        if found:
            ray_seconds += float(found.group(1))
        if event.dagster_event and event.dagster_event.event_type == DagsterEventType.ASSET_MATERIALIZATION:
            metadata = event.dagster_event.event_specific_data.materialization.metadata
            if "ray/wall_seconds" in metadata:
                jobs[event.step_key] = metadata["ray/wall_seconds"].value
    instance.dispose()
    return {
        "run_id": run.run_id,
        "timeline": timeline(events, created, started, ended),
        "ray_seconds": round(ray_seconds, 3),
        "ray_jobs_seconds": round(sum(jobs.values()), 3),
        # Part of "Dagster": the check steps' own durations (their work and their events).
        "check_steps": sum(1 for step in steps if step not in ASSET_STEPS),
        "check_steps_seconds": round(sum(t for step, t in steps.items() if step not in ASSET_STEPS), 3),
    }


def cli_run(data_dir: Path, home: Path, ray_env: dict[str, str]) -> dict:
    env = {**os.environ, "ETL_DATA_DIR": str(data_dir), "DAGSTER_HOME": str(home)}
    for name in ("RAY_ADDRESS", "RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH", "RAY_USAGE_STATS_ENABLED"):
        env.pop(name, None)
    env.update(ray_env)
    shutil.rmtree(data_dir / "warehouse", ignore_errors=True)
    command = [str(BIN / "dagster"), "asset", "materialize", "-m", "etl_assets.definitions"]
    command += ["--select", SELECT, "--partition", DAY.isoformat()]
    started, start = time.time(), time.perf_counter()
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    split = run_split(home, started, started + wall)
    process = import_seconds(env)
    jobs = split["ray_jobs_seconds"]
    ray_seconds = split["ray_seconds"]
    result = {
        "wall_seconds": round(wall, 3),
        "process_start_seconds": round(process, 3),
        "ray_seconds": round(ray_seconds, 3),
        "io_ray_jobs_seconds": round(jobs, 3),
        "dagster_seconds": round(wall - process - ray_seconds - jobs, 3),
        "of_which_check_steps": {"steps": split["check_steps"], "seconds": split["check_steps_seconds"]},
        "timeline": split["timeline"],
    }
    where = f"{'persistent' if ray_env else 'private'} ray, {home.name}"
    print(f"  {where}: {json.dumps(result)}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=HERE / "work")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "fixed_cost.json")
    args = parser.parse_args()
    root = sample(args.work / f"orders_{args.orders}", args.orders, 1000)
    data_dir = args.work / "fixed_cost"
    data_dir.mkdir(parents=True, exist_ok=True)
    if not (data_dir / "sources").exists():
        (data_dir / "sources").symlink_to((root / "sources").resolve())
    homes = {}
    for event_log in EVENT_LOGS:
        homes[event_log] = args.work / f"fixed_cost_home_{event_log}"
        shutil.rmtree(homes[event_log], ignore_errors=True)
        write_instance_yaml(homes[event_log], event_log)

    private = [cli_run(data_dir, homes["sharded"], {}) for _ in range(args.repeats)]
    ray_cluster.STATE = args.work / "ray_state"
    ray_env = ray_cluster.up(None, 1024)
    try:
        # The two event logs take turns, after one untimed run on the consolidated one (its
        # database is created by its first run; the sharded one's was by the private runs).
        cli_run(data_dir, homes["consolidated"], ray_env)
        persistent: list[dict] = []
        consolidated: list[dict] = []
        for _ in range(args.repeats):
            persistent.append(cli_run(data_dir, homes["sharded"], ray_env))
            consolidated.append(cli_run(data_dir, homes["consolidated"], ray_env))
    finally:
        ray_cluster.down()

    def best(runs: list[dict]) -> dict:
        return min(runs, key=lambda r: r["wall_seconds"])

    report = {
        "benchmark": "fixed_cost",
        "target": "under 10 s with a private Ray, under 5 s with a persistent one",
        "machine": machine(),
        "orders": args.orders,
        "private_ray": {"best": best(private), "runs": private},
        "persistent_ray": {"best": best(persistent), "runs": persistent},
        # The same, the instance's event log in Dagster's consolidated SQLite (one WAL-mode file).
        "persistent_ray_consolidated_event_log": {"best": best(consolidated), "runs": consolidated},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    series = ("private_ray", "persistent_ray", "persistent_ray_consolidated_event_log")
    print(json.dumps({k: report[k]["best"]["wall_seconds"] for k in series}))


if __name__ == "__main__":
    main()
