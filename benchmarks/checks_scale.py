"""Benchmark (checks at scale): the daily chain's checks that read stored rows, on one big day.

    python -m benchmarks.checks_scale --orders 10000000 100000000

Builds the daily chain once per size (the `memory` benchmark's sample, on a private Ray), then runs
each check that reads a day's rows (and the customers' versions check, over the whole CRM) alone,
as the UI's "Execute check" does, on a private Ray with a 128 MiB object store and one spill
worker. For each: wall seconds and the peak RSS summed over every process of the run
(``rss.peak_rss``), with the processes over 150 MiB at the peak; the driver is ``python``.
Writes ``results/checks_scale.json`` under ``--label`` (the code measured), keeping the other
labels.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import dagster as dg

from benchmarks.daily_chain import CHAIN, DIMENSION, platform_resources
from benchmarks.machine import machine
from benchmarks.memory import big_sample
from benchmarks.private_ray import private_ray
from benchmarks.rss import peak_rss
from benchmarks.samples import DAY, HERE
from etl_assets.checks.rules import check_key_named, check_named, checks_alone

CHECKED = [
    "orders_contract_rules",
    "orders_key_unique",
    "customer_orders_contract_rules",
    "customer_orders_key_unique",
    "customer_orders_orphans",
    "daily_customer_metrics_reconcile",
    "daily_customer_metrics_key_unique",
    # Whole-table: the memory sample's CRM of 500,000 customers.
    "customers_one_current_version",
]


def build(root: Path, warehouse: Path, instance: dg.DagsterInstance) -> None:
    shutil.rmtree(warehouse, ignore_errors=True)
    with private_ray(object_store_mb=128, spill_workers=1):
        for assets in (DIMENSION, CHAIN):
            dg.materialize(
                assets,
                instance=instance,
                partition_key=DAY.isoformat(),
                resources=platform_resources(root, warehouse),
            )


def run_check(name: str, root: Path, warehouse: Path, instance: dg.DagsterInstance) -> dict:
    check = check_named(name)
    key = check_key_named(name)
    asset = key.asset_key
    # A whole-table check runs without a partition, as the UI runs it.
    partitioned = next(spec for spec in check.check_specs if spec.key == key).partitions_def is not None
    owner = next(a for a in [*DIMENSION, *CHAIN] if asset in a.keys)
    defs = dg.Definitions(assets=[owner], asset_checks=[check], resources=platform_resources(root, warehouse))
    job = checks_alone(defs.resolve_implicit_global_asset_job_def(), [name])
    with peak_rss() as peak:
        start = time.perf_counter()
        result = job.execute_in_process(
            partition_key=DAY.isoformat() if partitioned else None, instance=instance, raise_on_error=False
        )
        wall = time.perf_counter() - start
    evaluations = result.get_asset_check_evaluations()
    return {
        "check": name,
        "passed": result.success and bool(evaluations) and all(e.passed for e in evaluations),
        "wall_seconds": round(wall, 2),
        "peak_rss_mib": peak.mib,
        "rss_mib_over_150_at_peak": {k: v for k, v in peak.breakdown_mib().items() if v > 150},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, nargs="+", default=[10_000_000, 100_000_000])
    parser.add_argument("--label", default="current")
    parser.add_argument("--work", type=Path, default=HERE / "work")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "checks_scale.json")
    args = parser.parse_args()
    sizes = []
    for orders in args.orders:
        root = big_sample(args.work / f"memory_{orders}", orders)
        warehouse = args.work / f"checks_scale_{orders}" / "warehouse"
        home = args.work / f"checks_scale_{orders}" / "dagster_home"
        home.mkdir(parents=True, exist_ok=True)
        instance = dg.DagsterInstance.from_config(str(home))
        build(root, warehouse, instance)
        with private_ray(object_store_mb=128, spill_workers=1):
            checks = []
            for name in CHECKED:
                checks.append(run_check(name, root, warehouse, instance))
                print(json.dumps({"orders": orders, **checks[-1]}), flush=True)
        sizes.append({"orders_per_day": orders, "checks": checks})
    # Runs of other code (``--label``) stay in the file beside this one, for comparison.
    report = json.loads(args.out.read_text()) if args.out.exists() else {"benchmark": "checks_scale"}
    report.setdefault("runs", {})[args.label] = {
        "machine": machine(),
        "object_store_mb": 128,
        "spill_workers": 1,
        "sizes": sizes,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
