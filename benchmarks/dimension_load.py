"""Benchmark (the SCD2 dimension on Delta): the table rewritten from the workers against a merge.

    python -m benchmarks.dimension_load [--customers 500000 --days 14 --repeats 3]

A CRM of ``customers`` customers whose versions spread over ``days`` days (80 % of the customers
start on the first day). ``raw_customers`` is loaded for every day first (untimed); then the real
``customers`` asset runs through ``dagster.materialize`` on a private Ray, three times in a row:

* ``initial``: the first day, into a new table (most customers arrive);
* ``daily``: the second day (a day's changed customers);
* ``backfill``: the remaining days in one run.

Two ways of writing the dimension take turns, each in a warehouse of its own:

* ``rewrite``: what the platform does (``DeltaWarehouse.rebuild``): the workers write every row of
  the dimension as Parquet files, the driver commits them in one overwrite;
* ``merge``: what it did before: the workers rebuild only the customers with an incoming version
  (``changed_customers_only``, the transform of before), and their rows stream through the driver
  into ``DeltaTable.merge`` (``Warehouse.rebuild``'s default, which the SQL warehouses use).

Each way runs its three loads in a process of its own, on a private Ray of its own (a driver
keeps what it once held, which would blur the other way's figures), the two ways taking turns.
For each load: the step's seconds (from the run's event log), the driver's peak RSS above its RSS
when the run started (its high-water mark, reset before the run: DESIGN says the driver must not
grow with the data), and the peak RSS and PSS summed over the process tree (driver, Ray, its
workers; RSS counts the object store's shared pages in every process that maps them, PSS splits
them). ``pairs`` holds each repeat's merge/rewrite ratio of step seconds, load by load.
After each repeat both tables must hold the same rows, or the benchmark fails. Writes
``results/dimension_load.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from benchmarks.backfill import range_tags
from benchmarks.daily_chain import platform_resources, step_seconds
from benchmarks.machine import machine
from benchmarks.private_ray import private_ray
from benchmarks.rss import peak_rss
from benchmarks.samples import HERE, sample
from etl_assets import definitions
from etl_assets.assets import customers as customers_asset
from etl_assets.transforms.customers import INCOMING, scd2_rebuild
from etl_assets.warehouse.base import Warehouse
from etl_assets.warehouse.delta import DeltaWarehouse

WAYS = {"rewrite": DeltaWarehouse.rebuild, "merge": Warehouse.rebuild}


def changed_customers_only(versions: pa.Table) -> pa.Table:
    """The transform the merge ran with: only the customers that have an incoming version, whose
    rows are then all marked changed (the others' rows are left to the table)."""
    changed = pc.unique(pc.filter(versions.column("customer_id"), versions.column(INCOMING)))
    return scd2_rebuild(versions.filter(pc.is_in(versions.column("customer_id"), value_set=changed)))


def driver_rss_mib(field: str) -> float:
    """This process's current (``VmRSS``) or peak (``VmHWM``) resident memory."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"/proc/self/status has no {field}")


def reset_driver_peak() -> None:
    """Start the high-water mark afresh from the current RSS (Linux's ``clear_refs`` 5)."""
    Path("/proc/self/clear_refs").write_text("5")


def materialize(root: Path, warehouse: Path, assets: list, first: int, last: int) -> dict[str, float]:
    """One run of ``assets`` over the days ``first`` to ``last`` from ``DAY``; each step's seconds."""
    with dg.DagsterInstance.ephemeral() as instance:  # disposed in this thread (see daily_chain)
        result = dg.materialize(
            assets,
            tags=range_tags(first, last),
            resources=platform_resources(root, warehouse),
            instance=instance,
        )
    if not result.success:
        raise RuntimeError(f"the run of days {first} to {last} failed")
    return step_seconds(result)


def load(root: Path, warehouse: Path, way: str, first: int, last: int) -> dict:
    """One run of the customers asset over the days ``first`` to ``last``, written ``way``."""
    DeltaWarehouse.rebuild = WAYS[way]
    customers_asset.scd2_rebuild = changed_customers_only if way == "merge" else scd2_rebuild
    try:
        start_rss = driver_rss_mib("VmRSS")
        reset_driver_peak()
        with peak_rss(with_pss=True) as tree:
            start = time.perf_counter()
            steps = materialize(root, warehouse, [definitions.customers], first, last)
            wall = time.perf_counter() - start
    finally:
        DeltaWarehouse.rebuild = WAYS["rewrite"]
        customers_asset.scd2_rebuild = scd2_rebuild
    return {
        "wall_seconds": round(wall, 3),
        "step_seconds": steps["customers"],
        "driver_growth_mib": round(driver_rss_mib("VmHWM") - start_rss, 1),
        "tree_peak_mib": tree.mib,
        "tree_peak_pss_mib": tree.pss_mib,
    }


def content(warehouse: Path) -> pa.Table:
    table = DeltaTable(str(warehouse / "customers")).to_pyarrow_table()
    return table.sort_by([("customer_id", "ascending"), ("valid_from", "ascending")])


def one_way(root: Path, raw: Path, warehouse: Path, way: str, phases: dict[str, tuple[int, int]]) -> dict:
    """The three loads written ``way``, in this process on a private Ray of its own."""
    shutil.rmtree(warehouse, ignore_errors=True)
    shutil.copytree(raw / "raw_customers", warehouse / "raw_customers")
    with private_ray():
        # The driver's own RSS once Ray is up, before the first load.
        loads = {"driver_rss_at_start_mib": driver_rss_mib("VmRSS")}
        for phase, (first, last) in phases.items():
            loads[phase] = load(root, warehouse, way, first, last)
    return loads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--customers", type=int, default=500_000)
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=HERE / "work")
    parser.add_argument("--way", choices=list(WAYS), help=argparse.SUPPRESS)  # one process's part
    args = parser.parse_args()

    root = sample(args.work / f"dimension_{args.customers}", 1000, args.customers, args.days)
    phases = {"initial": (0, 0), "daily": (1, 1), "backfill": (2, args.days - 1)}
    raw = args.work / f"dimension_{args.customers}_raw"
    warehouse = {way: args.work / f"dimension_{args.customers}_{way}" for way in WAYS}
    if args.way:
        print(json.dumps(one_way(root, raw, warehouse[args.way], args.way, phases)))
        return

    shutil.rmtree(raw, ignore_errors=True)
    with private_ray():
        materialize(root, raw, [definitions.raw_customers], 0, args.days - 1)
    runs: dict[str, list[dict]] = {way: [] for way in WAYS}
    for repeat in range(args.repeats):
        # Each way in a process of its own (a driver keeps what it once held), taking turns.
        for way in list(WAYS) if repeat % 2 == 0 else list(WAYS)[::-1]:
            command = [sys.executable, "-m", "benchmarks.dimension_load", "--way", way]
            command += [
                "--customers",
                str(args.customers),
                "--days",
                str(args.days),
                "--work",
                str(args.work),
            ]
            done = subprocess.run(command, capture_output=True, text=True, cwd=HERE.parent)
            if done.returncode:
                raise RuntimeError(f"the {way} process failed: {done.stderr[-3000:]}")
            runs[way].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"  {repeat} {way:7s} {runs[way][-1]}", flush=True)
        tables = {way: content(warehouse[way]) for way in WAYS}
        if not tables["rewrite"].equals(tables["merge"]):
            raise RuntimeError("the rewritten and the merged dimension differ")
    summary = {
        way: {
            phase: {
                "step_seconds": min(r[phase]["step_seconds"] for r in found),
                "driver_growth_mib": max(r[phase]["driver_growth_mib"] for r in found),
                "tree_peak_mib": max(r[phase]["tree_peak_mib"] for r in found),
                "tree_peak_pss_mib": max(r[phase]["tree_peak_pss_mib"] for r in found),
            }
            for phase in phases
        }
        for way, found in runs.items()
    }
    result = {
        "machine": machine(),
        "customers": args.customers,
        "days": args.days,
        "dimension_rows": tables["rewrite"].num_rows,
        "same_content": True,
        "summary": summary,
        "summary_note": "step_seconds: best of the repeats; driver growth and tree peaks: worst",
        "pairs": [
            {
                phase: round(merge[phase]["step_seconds"] / rewrite[phase]["step_seconds"], 2)
                for phase in phases
            }
            for rewrite, merge in zip(runs["rewrite"], runs["merge"], strict=True)
        ],
        "runs": runs,
    }
    out = HERE / "results" / "dimension_load.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
