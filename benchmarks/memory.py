"""Benchmark (memory and scaling): the daily chain on one day of 1M, 10M and 100M orders.

    python -m benchmarks.memory --orders 1000000 10000000 100000000

Runs orders -> customer_orders -> daily_customer_metrics and their checks (as a daily run from
the UI or the schedule does; ``--without-checks`` for the chain alone) through
``dagster.materialize`` on a private Ray whose object store is capped (``--object-store-mb``; it
spills to disk beyond, with ``--spill-workers`` processes spilling and as many restoring:
``RayResource.spill_workers``), with
the `customers` dimension built beforehand. Peak RSS is sampled every 50 ms and summed over every
process of the run: the driver, the raylet, the GCS, every Ray worker (the object store's shared
pages count in the RSS of each process that maps them, so the sum overstates, never understates);
the summed PSS (shared pages split among their processes) is recorded beside it, with the RSS of
each process at the peak. Each size runs in a process of its own, as each run has its own driver.
Reports rows/s at each size: the cost should grow linearly. Target: under 2 GiB at 100M.
A day of more than 10M orders is generated in chunks of 10M rows (one file each, row groups of
1M rows), so the generator's own memory stays bounded too. Writes ``results/memory.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from benchmarks.chain_peers import lake_files
from benchmarks.daily_chain import CHAIN, DIMENSION, run_platform, step_at
from benchmarks.machine import machine
from benchmarks.private_ray import private_ray
from benchmarks.rss import peak_rss
from benchmarks.samples import DAY, HERE, sample
from etl_assets.checks.rules import checks_of
from etl_assets.sample_data import SampleSpec, generate_customers, generate_orders_day

CHUNK = 10_000_000
CUSTOMERS = 500_000


def big_sample(root: Path, orders: int) -> Path:
    """One lake day of ``orders`` orders in chunks of ``CHUNK``, with the CRM of ``CUSTOMERS``."""
    if orders <= CHUNK:
        return sample(root, orders, min(CUSTOMERS, max(1000, orders // 20)))
    marker = root / "sources" / "big.json"
    if marker.exists() and json.loads(marker.read_text()) == {"orders": orders}:
        return root
    sample(root, CHUNK, CUSTOMERS)  # the CRM and the first chunk, as the generator writes them
    spec = SampleSpec(
        out=root / "sources", start=DAY, days=1, orders_per_day=CHUNK, customers=CUSTOMERS, seed=1
    )
    # The generator draws the customers first from its seed: the same customers, re-drawn here.
    customers = generate_customers(np.random.default_rng(1), spec)
    ids, first = np.unique(customers["customer_id"], return_index=True)
    created = customers["created_at"][first]
    folder = root / "sources" / "lake" / "orders" / f"date={DAY.isoformat()}"
    rng = np.random.default_rng(2)
    for chunk in range(1, orders // CHUNK):
        table = generate_orders_day(rng, DAY, CHUNK, 1 + chunk * CHUNK, ids, created)
        pq.write_table(table, folder / f"part-{chunk + 1:05d}.parquet", row_group_size=1_000_000)
        print(f"  generated chunk {chunk + 1} of {orders // CHUNK}", flush=True)
    marker.write_text(json.dumps({"orders": orders}))
    return root


def measure_size(
    orders: int, work: Path, object_store_mb: int, spill_workers: int, without_checks: bool
) -> dict:
    """One day of ``orders`` orders on a new private Ray: its wall time and the peak of its tree."""
    run = CHAIN if without_checks else CHAIN + checks_of(CHAIN)
    root = big_sample(work / f"memory_{orders}", orders)
    rows_in = sum(pq.read_metadata(f).num_rows for f in lake_files(root / "sources", DAY))
    warehouse = work / f"memory_{orders}" / "warehouse"
    with private_ray(object_store_mb=object_store_mb, spill_workers=spill_workers):
        run_platform(root, warehouse, DIMENSION)
        steps: dict = {}
        starts: dict = {}
        with peak_rss(with_pss=True) as peak:
            start = time.perf_counter()
            run_platform(root, warehouse, run, steps, starts)
            wall = time.perf_counter() - start
    size = {
        "orders_per_day": orders,
        "lake_rows": rows_in,
        "wall_seconds": round(wall, 3),
        "rows_per_second": round(rows_in / wall, 1),
        "peak_rss_mib": peak.mib,
        "peak_pss_mib": peak.pss_mib,
        "step_at_peak": step_at(starts, peak.at),
        "rss_mib_by_process_at_peak": peak.breakdown_mib(),
        "processes_at_peak": peak.processes,
        "step_seconds": steps,
    }
    print(json.dumps(size), flush=True)
    return size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, nargs="+", default=[1_000_000, 10_000_000, 100_000_000])
    # Every process that touches the object store counts the pages it touched in its RSS, so the
    # cap and the number of spill and restore processes weigh on the sum several times over.
    parser.add_argument("--object-store-mb", type=int, default=128)
    parser.add_argument("--spill-workers", type=int, default=1)
    parser.add_argument("--without-checks", action="store_true", help="the chain's assets alone")
    parser.add_argument("--work", type=Path, default=HERE / "work")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "memory.json")
    args = parser.parse_args()
    # Each size in a process of its own, as each run has its own (a run worker, a CLI process): a
    # driver that ran the smaller days first would carry what they left into the bigger one's peak.
    with ProcessPoolExecutor(1, mp_context=get_context("spawn"), max_tasks_per_child=1) as pool:
        sizes = [
            pool.submit(
                measure_size, orders, args.work, args.object_store_mb, args.spill_workers, args.without_checks
            ).result()
            for orders in args.orders
        ]
    report = {
        "benchmark": "memory",
        "target": "a day of 100M orders under 2 GiB peak RSS summed over the run's processes",
        "machine": machine(),
        "object_store_mb": args.object_store_mb,
        "spill_workers": args.spill_workers,
        "checks": [] if args.without_checks else [k.name for c in checks_of(CHAIN) for k in c.check_keys],
        "sizes": sizes,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
