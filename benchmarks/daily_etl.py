"""Benchmark: one day of the daily chain at a given size, on etl_assets (Ray + Delta), DuckDB and pandas.

    python -m benchmarks.daily_etl --orders 1000000

Every engine reads the same generated files and writes the six tables. The etl_assets figure runs
the real assets through ``dagster.materialize`` (Ray started beforehand; its start-up is reported
apart). Peak RSS is sampled over the whole process tree (driver, raylet, workers, object store).
Writes ``benchmarks/results/daily_etl.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from datetime import date
from pathlib import Path

import dagster as dg
import psutil
import pyarrow.parquet as pq

from benchmarks import duckdb_peer, pandas_peer
from benchmarks.private_ray import private_ray
from benchmarks.rss import peak_rss
from etl_assets import definitions
from etl_assets.resources import RayResource, SourcesResource, WarehouseResource
from etl_assets.sample_data import SampleSpec, generate

HERE = Path(__file__).resolve().parent
DAY = date(2024, 1, 1)
ASSETS = [
    definitions.raw_customers,
    definitions.customers,
    definitions.orders_and_rejects,
    definitions.customer_orders,
    definitions.daily_customer_metrics,
]


def sample(root: Path, orders: int, customers: int) -> Path:
    marker = root / "sources" / "spec.json"
    spec = {"orders": orders, "customers": customers, "seed": 1}
    if not (marker.exists() and json.loads(marker.read_text()) == spec):
        shutil.rmtree(root, ignore_errors=True)
        generate(
            SampleSpec(
                out=root / "sources",
                start=DAY,
                days=1,
                orders_per_day=orders,
                customers=customers,
                seed=1,
                events_per_batch=10,
            )
        )
        marker.write_text(json.dumps(spec))
    return root


def run_etl_assets(root: Path, out: Path) -> None:
    shutil.rmtree(out, ignore_errors=True)
    result = dg.materialize(
        ASSETS,
        partition_key=DAY.isoformat(),
        resources={
            "ray_cluster": RayResource(),
            "sources": SourcesResource(
                crm_url=f"sqlite:///{root / 'sources' / 'crm.db'}", data_dir=str(root)
            ),
            "warehouse": WarehouseResource(root=str(out)),
        },
    )
    assert result.success


def measure(name: str, fn) -> dict:
    start = time.perf_counter()
    with peak_rss() as peak:
        rows = fn()
    wall = time.perf_counter() - start
    print(f"{name:12s} {wall:8.2f} s  peak RSS {peak.mib:8.1f} MiB")
    return {
        "rows": rows,
        "wall_seconds": round(wall, 3),
        "rows_per_second": round(rows / wall, 1),
        "peak_rss_mib": peak.mib,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=None, help="default: orders / 20")
    parser.add_argument("--work", type=Path, default=HERE / "work")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "daily_etl.json")
    args = parser.parse_args()
    customers = args.customers or max(1000, args.orders // 20)
    root = sample(args.work / f"orders_{args.orders}", args.orders, customers)
    rows_in = sum(
        pq.read_metadata(f).num_rows for f in (root / "sources" / "lake" / "orders").rglob("*.parquet")
    )

    engines = {}
    engines["duckdb"] = measure("duckdb", lambda: duckdb_peer.run(root, DAY, args.work / "out_duckdb"))
    engines["pandas"] = measure(
        "pandas", lambda: pandas_peer.run(root / "sources", DAY, args.work / "out_pandas")
    )

    with private_ray() as ray_init:

        def etl() -> int:
            run_etl_assets(root, args.work / "out_etl_assets")
            return rows_in

        engines["etl_assets"] = measure("etl_assets", etl)

    base = engines["duckdb"]["wall_seconds"]
    report = {
        "benchmark": "daily_etl",
        "orders_per_day": args.orders,
        "customers": customers,
        "lake_rows": rows_in,
        "machine": {
            "cpus": os.cpu_count(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "ray_init_seconds": round(ray_init, 3),
        "engines": engines,
        "wall_ratio_to_duckdb": {k: round(v["wall_seconds"] / base, 2) for k, v in engines.items()},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["wall_ratio_to_duckdb"]))


if __name__ == "__main__":
    main()
