"""Benchmark (throughput): the daily chain orders -> customer_orders -> daily_customer_metrics.

    python -m benchmarks.daily_chain --orders 1000000 10000000

For each size: one generated lake day, the `customers` dimension built beforehand by the real assets
(untimed: the chain reads it, so every engine reads the same files), then the chain timed on
etl_assets (the assets through ``dagster.materialize``, Ray already started), DuckDB and pandas,
each writing the same tables. Peak RSS is sampled over each engine's whole process tree.
Writes ``benchmarks/results/daily_chain.json``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq

from benchmarks import chain_peers
from benchmarks.machine import machine
from benchmarks.private_ray import private_ray
from benchmarks.rss import peak_rss
from benchmarks.samples import DAY, HERE, sample
from etl_assets import definitions
from etl_assets.resources import RayResource, SourcesResource, WarehouseResource

CHAIN = [definitions.orders_and_rejects, definitions.customer_orders, definitions.daily_customer_metrics]
DIMENSION = [definitions.raw_customers, definitions.customers]


def platform_resources(root: Path, warehouse: Path) -> dict:
    return {
        "ray_cluster": RayResource(),
        "sources": SourcesResource(crm_url=f"sqlite:///{root / 'sources' / 'crm.db'}", data_dir=str(root)),
        "warehouse": WarehouseResource(root=str(warehouse)),
    }


def step_seconds(result: dg.ExecuteInProcessResult) -> dict[str, float]:
    """Each step's own duration, from the run's event log."""
    return {
        event.step_key: round(event.event_specific_data.duration_ms / 1000, 3)
        for event in result.all_events
        if event.event_type_value == "STEP_SUCCESS"
    }


def run_platform(
    root: Path, warehouse: Path, assets: list, record: dict | None = None, starts: dict | None = None
) -> None:
    """One run of ``assets`` for the day; ``record`` gets each step's seconds, ``starts`` each
    step's start (Unix time)."""
    # Disposed here: an in-memory instance left to the garbage collector closes its SQLite
    # connections from whichever thread collects it, which SQLite refuses, noisily.
    with dg.DagsterInstance.ephemeral() as instance:
        result = dg.materialize(
            assets,
            partition_key=DAY.isoformat(),
            resources=platform_resources(root, warehouse),
            instance=instance,
        )
        if not result.success:
            raise RuntimeError("the platform's run failed")
        if record is not None:
            record.update(step_seconds(result))
        if starts is not None:
            starts.update(
                (entry.step_key, entry.timestamp)
                for entry in instance.all_logs(result.run_id, of_type=dg.DagsterEventType.STEP_START)
            )


def step_at(starts: dict[str, float], moment: float) -> str | None:
    """The step running at ``moment`` in a run whose steps run one at a time: the last one started."""
    started = [(at, step) for step, at in starts.items() if at <= moment]
    return max(started)[1] if started else None


def measure(name: str, fn) -> dict:
    with peak_rss() as peak:
        start = time.perf_counter()
        rows = fn()
        wall = time.perf_counter() - start
    print(
        f"  {name:12s} {wall:8.2f} s  {rows / wall:12,.0f} rows/s  peak RSS {peak.mib:8.1f} MiB", flush=True
    )
    return {
        "rows": rows,
        "wall_seconds": round(wall, 3),
        "rows_per_second": round(rows / wall, 1),
        "peak_rss_mib": peak.mib,
    }


def prepare(orders: int, work: Path) -> dict:
    """The size's sample and its `customers` dimension (built by the real assets, untimed)."""
    customers = max(1000, orders // 20)
    root = sample(work / f"orders_{orders}", orders, customers)
    warehouse = work / f"chain_{orders}" / "warehouse"
    rows_in = sum(pq.read_metadata(f).num_rows for f in chain_peers.lake_files(root / "sources", DAY))
    with private_ray():
        run_platform(root, warehouse, DIMENSION)
    return {
        "orders": orders,
        "customers": customers,
        "root": root,
        "warehouse": warehouse,
        "rows_in": rows_in,
    }


def run_peers(size: dict, engine: str, work: Path) -> dict:
    peer = {"duckdb": chain_peers.run_duckdb, "pandas": chain_peers.run_pandas}[engine]
    return measure(
        engine, lambda: peer(size["root"] / "sources", size["warehouse"], DAY, work / f"chain_{engine}")
    )


def run_etl_assets(size: dict) -> dict:
    steps: dict = {}

    def platform() -> int:
        run_platform(size["root"], size["warehouse"], CHAIN, steps)
        return size["rows_in"]

    return {**measure("etl_assets", platform), "step_seconds": steps}


def summary(size: dict, runs: dict[str, list[dict]]) -> dict:
    # The best of the repeats: this machine's timings wander by tens of percent between runs.
    best = {name: min(r, key=lambda run: run["wall_seconds"]) for name, r in runs.items() if r}
    out = {
        "orders_per_day": size["orders"],
        "customers": size["customers"],
        "lake_rows": size["rows_in"],
        "engines": best,
        "all_runs": runs,
    }
    if "duckdb" in best:
        base = best["duckdb"]["wall_seconds"]
        out["wall_ratio_to_duckdb"] = {k: round(v["wall_seconds"] / base, 2) for k, v in best.items()}
    if {"pandas", "etl_assets"} <= best.keys():
        out["etl_assets_faster_than_pandas"] = (
            best["etl_assets"]["wall_seconds"] < best["pandas"]["wall_seconds"]
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--engines", nargs="+", default=["duckdb", "pandas", "etl_assets"])
    parser.add_argument("--work", type=Path, default=HERE / "work")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "daily_chain.json")
    args = parser.parse_args()
    sizes = [prepare(n, args.work) for n in args.orders]
    runs = {id(s): {e: [] for e in args.engines} for s in sizes}
    # The peers run while no Ray is up, so their peak RSS is their own.
    for size in sizes:
        print(f"{size['orders']:,} orders ({size['rows_in']:,} lake rows), {size['customers']:,} customers")
        for engine in [e for e in args.engines if e != "etl_assets"]:
            runs[id(size)][engine] = [run_peers(size, engine, args.work) for _ in range(args.repeats)]
    ray_init = None
    if "etl_assets" in args.engines:
        with private_ray() as ray_init:
            # Untimed: a new Ray's first run starts its workers and Ray Data's actors.
            run_platform(sizes[0]["root"], sizes[0]["warehouse"], CHAIN)
            for size in sizes:
                print(f"{size['orders']:,} orders")
                runs[id(size)]["etl_assets"] = [run_etl_assets(size) for _ in range(args.repeats)]
    report = {
        "benchmark": "daily_chain",
        "target": "etl_assets within 3x of DuckDB at 10M orders, faster than pandas at 1M and 10M",
        "machine": machine(),
        "ray_init_seconds": round(ray_init, 3) if ray_init is not None else None,
        "sizes": [summary(size, runs[id(size)]) for size in sizes],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for size in report["sizes"]:
        print(size["orders_per_day"], json.dumps(size.get("wall_ratio_to_duckdb")))


if __name__ == "__main__":
    main()
