"""Benchmark: the two atomic ways to replace a day window of a Delta table from Ray (DESIGN.md).

    python -m benchmarks.delta_write --orders 1000000

* ``worker_files``: Ray workers write Parquet files, the driver commits them in one transaction
  (``create_write_transaction`` with partition filters): what ``DeltaWarehouse`` does.
* ``driver_stream``: the driver iterates the blocks (``iter_batches``) into
  ``write_deltalake(mode="overwrite", predicate=...)``.

Both run the same read -> validate pipeline on the same lake day: create, then replace twice.
Writes ``benchmarks/results/delta_write.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from functools import partial
from pathlib import Path

import pyarrow as pa
import ray
from deltalake import DeltaTable, write_deltalake

from benchmarks.private_ray import private_ray
from benchmarks.rss import peak_rss
from benchmarks.samples import DAY, HERE, sample
from etl_assets.contracts import ORDERS
from etl_assets.sources.orders_lake import inspect_days, read_orders_days
from etl_assets.transforms.orders import classify_orders, split_classified
from etl_assets.warehouse.delta import DeltaWarehouse


def valid_orders(batch: pa.Table) -> pa.Table:
    return split_classified(batch)[ORDERS.name]


def pipeline(root: Path) -> ray.data.Dataset:
    days = inspect_days(str(root / "sources" / "lake" / "orders"), [DAY])
    return read_orders_days(days, partial(classify_orders, run_id="bench")).map_batches(
        valid_orders, batch_format="pyarrow", batch_size=None
    )


def worker_files(root: Path, target: Path) -> int:
    result = DeltaWarehouse(str(target)).replace_window(pipeline(root), [ORDERS], [DAY])
    return result.tables[ORDERS.name].rows_written


def driver_stream(root: Path, target: Path) -> int:
    rows = 0

    def batches():
        nonlocal rows
        for block in pipeline(root).iter_batches(batch_format="pyarrow", batch_size=None):
            rows += block.num_rows
            yield from block.cast(ORDERS.schema).to_batches()

    reader = pa.RecordBatchReader.from_batches(ORDERS.schema, batches())
    write_deltalake(
        str(target / ORDERS.name),
        reader,
        mode="overwrite",
        partition_by=["order_date"],
        predicate=f"order_date = '{DAY.isoformat()}'",
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--work", type=Path, default=HERE / "work")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "delta_write.json")
    args = parser.parse_args()
    root = sample(args.work / f"orders_{args.orders}", args.orders, max(1000, args.orders // 20))
    results = {}
    with private_ray():
        pipeline(root).count()  # warm the workers up so neither strategy pays Ray's start-up
        for name, fn in (("worker_files", worker_files), ("driver_stream", driver_stream)):
            target = args.work / f"delta_{name}"
            shutil.rmtree(target, ignore_errors=True)
            runs = []
            for phase in ("create", "replace", "replace again"):
                with peak_rss() as peak:
                    start = time.perf_counter()
                    rows = fn(root, target)
                    wall = time.perf_counter() - start
                runs.append(
                    {
                        "phase": phase,
                        "rows": rows,
                        "wall_seconds": round(wall, 3),
                        "rows_per_second": round(rows / wall, 1),
                        "peak_rss_mib": peak.mib,
                    }
                )
                print(name, runs[-1])
            assert DeltaTable(str(target / ORDERS.name)).to_pyarrow_table().num_rows == rows
            results[name] = runs
    report = {"benchmark": "delta_write", "orders_per_day": args.orders, "strategies": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
