"""Benchmark (fixed cost): the whole daily chain for one day of 1,000 orders from the Dagster CLI.

    python -m benchmarks.fixed_cost

Runs ``dagster asset materialize`` exactly as the README does (raw_customers, customers, orders,
orders_rejects, customer_orders, daily_customer_metrics and their checks) in a fresh process, first
with a private Ray started by the run, then connected to a persistent local Ray (``make ray-up``)
through ``RAY_ADDRESS``. Each wall time is split into process start (interpreter and imports),
Ray (start-up or connection), the Ray jobs (reads, transforms, writes: I/O) and Dagster (the rest:
run and event storage, checks, metadata), read from the run's own event log.
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


def run_split(home: Path) -> dict:
    """Ray's share (the resource logs how long it took to start or connect) and the Ray jobs'
    share (every materialization's ``ray/wall_seconds``) of the latest run, from its event log."""
    instance = DagsterInstance.from_config(str(home))
    run = instance.get_runs(limit=1)[0]
    ray_seconds = 0.0
    # By step: a multi-asset's one Ray job is reported on each of its tables (orders and
    # orders_rejects share one), and must be counted once.
    jobs: dict[str, float] = {}
    steps: dict[str, float] = {}
    for event in instance.all_logs(run.run_id):
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
    start = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(done.stderr[-3000:])
    split = run_split(home)
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
    }
    print(f"  {'persistent' if ray_env else 'private':10s} ray: {json.dumps(result)}", flush=True)
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
    home = args.work / "fixed_cost_home"
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")

    private = [cli_run(data_dir, home, {}) for _ in range(args.repeats)]
    ray_cluster.STATE = args.work / "ray_state"
    ray_env = ray_cluster.up(None, 1024)
    try:
        persistent = [cli_run(data_dir, home, ray_env) for _ in range(args.repeats)]
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
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k]["best"]["wall_seconds"] for k in ("private_ray", "persistent_ray")}))


if __name__ == "__main__":
    main()
