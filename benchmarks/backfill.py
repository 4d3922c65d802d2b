"""Benchmark (backfills): 30 days in one run against one day holding the same rows, and 30 runs.

    python -m benchmarks.backfill --days 30 --orders-per-day 10000 100000 1000000

For each size, two samples with the same customers: ``days`` lake days of ``orders-per-day``
orders, and one day of ``days x orders-per-day`` orders. The whole daily chain (raw_customers,
customers, orders, orders_rejects, customer_orders, daily_customer_metrics) and its checks run
through ``dagster.materialize`` (Ray started beforehand, its start-up reported apart):

* ``one_day``: one run over the single big day;
* ``single_run_backfill``: one run over the whole range (``BackfillPolicy.single_run``, as a
  backfill launched from the UI or the CLI runs it);
* ``separate_runs``: one run per day, as a backfill of runs per partition would.

Each run's time is split from its own event log: the asset steps' own work and the time Dagster
spends writing their per-partition materializations, the "planned" events (one per partition per
asset), and the check steps whole (their work and their evaluations, one per partition per
partitioned check, interleave in a step of several checks).

Target: the single-run backfill at most 1.5x the one-day run. The sizes show how the ratio moves
with the days' rows: Dagster's bookkeeping per partition is a fixed cost, the work is not. Writes
``results/backfill.json``, a record per size.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from datetime import timedelta
from pathlib import Path

import dagster as dg

from benchmarks.daily_chain import platform_resources
from benchmarks.machine import machine
from benchmarks.private_ray import private_ray
from benchmarks.samples import DAY, HERE, sample
from etl_assets import definitions
from etl_assets.checks.rules import checks_of

ASSETS = [
    definitions.raw_customers,
    definitions.customers,
    definitions.orders_and_rejects,
    definitions.customer_orders,
    definitions.daily_customer_metrics,
]
ASSET_CHECKS = checks_of(ASSETS)


ASSET_STEPS = {asset.node_def.name for asset in ASSETS}


TARGET_RATIO = 1.5

RESULTS = {"ASSET_MATERIALIZATION", "ASSET_CHECK_EVALUATION"}
PLANNED = {"ASSET_MATERIALIZATION_PLANNED", "ASSET_CHECK_EVALUATION_PLANNED"}


def _writing(entries: list, kinds: set[str]) -> tuple[int, float]:
    """How many events of ``kinds`` there are, and the seconds from the first of them to the event
    after the last (an event's timestamp is taken before it is written, so this covers writing
    each of them)."""
    found = [i for i, entry in enumerate(entries) if entry.dagster_event.event_type_value in kinds]
    if not found:
        return 0, 0.0
    after = entries[min(found[-1] + 1, len(entries) - 1)]
    return len(found), after.timestamp - entries[found[0]].timestamp


def split(instance: dg.DagsterInstance, run_id: str) -> dict:
    """Where a run's time went, from its event log: seconds and event counts."""
    logs = [entry for entry in instance.all_logs(run_id) if entry.dagster_event is not None]
    planned, planned_seconds = _writing(logs, PLANNED)
    out = {"planned_events": planned, "planned_events_seconds": round(planned_seconds, 3)}
    steps: dict[str, list] = {}
    for entry in logs:
        if entry.dagster_event.step_key is not None:
            steps.setdefault(entry.dagster_event.step_key, []).append(entry)
    work = writing = checks = 0.0
    events = check_events = 0
    for step, entries in steps.items():
        start = next(e.timestamp for e in entries if e.dagster_event.event_type_value == "STEP_START")
        count, seconds = _writing(entries, RESULTS)
        if step not in ASSET_STEPS:
            # A step of several checks writes one check's results before it judges the next: its
            # work and its writing interleave, so a check step is timed whole.
            checks, check_events = checks + entries[-1].timestamp - start, check_events + count
            continue
        first_result = next(
            (e.timestamp for e in entries if e.dagster_event.event_type_value in RESULTS),
            entries[-1].timestamp,
        )
        # Work: from the step's start to its first result; then writing its results.
        work, writing, events = work + first_result - start, writing + seconds, events + count
    out["asset_steps_work_seconds"] = round(work, 3)
    out["asset_result_events"] = events
    out["asset_result_events_seconds"] = round(writing, 3)
    out["check_steps"] = sum(1 for step in steps if step not in ASSET_STEPS)
    out["check_steps_seconds"] = round(checks, 3)
    out["check_result_events"] = check_events
    return out


def range_tags(first_day: int, last_day: int) -> dict[str, str]:
    """Run tags of a single run over the days ``first_day`` to ``last_day`` from ``DAY``, as a
    backfill launches it."""
    return {
        "dagster/asset_partition_range_start": (DAY + timedelta(days=first_day)).isoformat(),
        "dagster/asset_partition_range_end": (DAY + timedelta(days=last_day)).isoformat(),
    }


def run(root: Path, warehouse: Path, first_day: int, last_day: int) -> tuple[float, dict]:
    """The run's wall seconds, and its split. The split reads the whole event log back (a 30-day
    run's is 945 events, each deserialized), after the run, off the clock."""
    # Disposed here: an in-memory instance left to the garbage collector closes its SQLite
    # connections from whichever thread collects it, which SQLite refuses, noisily.
    with dg.DagsterInstance.ephemeral() as instance:
        start = time.perf_counter()
        result = dg.materialize(
            ASSETS + ASSET_CHECKS,
            resources=platform_resources(root, warehouse),
            instance=instance,
            tags=range_tags(first_day, last_day),
        )
        wall = time.perf_counter() - start
        if not result.success:
            raise RuntimeError("the platform's run failed")
        return wall, split(instance, result.run_id)


def timed(label: str, fn, splits: list) -> float:
    wall, split_of_run = fn()
    splits.append(split_of_run)
    print(f"  {label:22s} {wall:8.2f} s", flush=True)
    return round(wall, 3)


def _summed(runs: list[tuple[float, dict]]) -> tuple[float, dict]:
    """Separate runs as one: their walls and their splits summed."""
    splits = [split_of_run for _, split_of_run in runs]
    return sum(wall for wall, _ in runs), {key: round(sum(s[key] for s in splits), 3) for key in splits[0]}


def measure(orders_per_day: int, days: int, customers: int, repeats: int, work: Path) -> dict:
    """The three ways of loading ``days`` days of ``orders_per_day`` orders, taking turns
    ``repeats`` times on the running Ray, after one untimed one-day run (it warms the workers; the
    30-day sample's files are first read by the first timed single run)."""
    total = days * orders_per_day
    spread = sample(work / f"backfill_{days}x{orders_per_day}", orders_per_day, customers, days)
    one = sample(work / f"backfill_1x{total}", total, customers, 1)
    out = work / "backfill_warehouse"

    def fresh(fn):
        def go():
            shutil.rmtree(out, ignore_errors=True)
            return fn()

        return go

    plans = {
        "one_day": lambda: run(one, out, 0, 0),
        "single_run_backfill": lambda: run(spread, out, 0, days - 1),
        "separate_runs": lambda: _summed([run(spread, out, d, d) for d in range(days)]),
    }
    runs: dict[str, list[float]] = {name: [] for name in plans}
    splits: dict[str, list[dict]] = {name: [] for name in plans}
    print(f"{orders_per_day:,} orders a day:", flush=True)
    fresh(plans["one_day"])()
    for _ in range(repeats):
        for name, plan in plans.items():
            runs[name].append(timed(name, fresh(plan), splits[name]))
    shutil.rmtree(out, ignore_errors=True)
    best = {name: min(walls) for name, walls in runs.items()}
    ratios = {name: round(wall / best["one_day"], 2) for name, wall in best.items()}
    return {
        "orders_per_day": orders_per_day,
        "total_orders": total,
        "best_wall_seconds": best,
        "all_wall_seconds": runs,
        # Of each best run, from its event log (separate_runs: summed over its runs).
        "split_of_best_run": {name: splits[name][runs[name].index(best[name])] for name in plans},
        "ratio_to_one_day": ratios,
        "single_run_within_target": best["single_run_backfill"] <= TARGET_RATIO * best["one_day"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--orders-per-day", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--customers", type=int, default=5_000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--work", type=Path, default=HERE / "work")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "backfill.json")
    args = parser.parse_args()
    with private_ray() as ray_init:
        sizes = [measure(n, args.days, args.customers, args.repeats, args.work) for n in args.orders_per_day]
    report = {
        "benchmark": "backfill",
        "target": f"single-run backfill at most {TARGET_RATIO}x one run over one day holding the same rows",
        "machine": machine(),
        "days": args.days,
        "customers": args.customers,
        "ray_init_seconds": round(ray_init, 3),
        "sizes": sizes,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for size in sizes:
        print(f"{size['orders_per_day']:>12,} a day: {json.dumps(size['ratio_to_one_day'])}")


if __name__ == "__main__":
    main()
