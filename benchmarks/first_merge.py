"""Benchmark (a merge's first load on Delta): written by the workers against DeltaTable.merge.

    python -m benchmarks.first_merge [--rows 5000000 --repeats 3]

``rows`` rows of ``hourly_user_metrics`` (distinct hours and users, every column filled) merged by
key into a table that does not exist yet, as the first load or a backfill of a merge table is.
Two ways take turns, each in a fresh process on a private Ray of its own:

* ``workers``: what the platform does (``DeltaWarehouse.merge`` into no table): the workers write
  the rows as Parquet files, and the table's first commit holds them;
* ``driver``: what it did before: the table created empty, then every row streamed through the
  driver into ``DeltaTable.merge``.

For each: the merge's seconds, the driver's peak RSS above its RSS before the merge (its
high-water mark, reset first), and the table's rows (which must be ``rows``). Writes
``results/first_merge.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import ray.data
from deltalake import DeltaTable

from benchmarks.dimension_load import driver_rss_mib, reset_driver_peak
from benchmarks.machine import machine
from benchmarks.private_ray import private_ray
from benchmarks.samples import HERE
from etl_assets.contracts import HOURLY_USER_METRICS
from etl_assets.warehouse.delta import DeltaWarehouse

WAYS = ("workers", "driver")
HOUR_US = 3_600_000_000


def metrics_rows(batch: dict) -> pa.Table:
    """Rows of ``hourly_user_metrics`` for the ids in ``batch``: 1,000 users an hour."""
    ids = batch["id"]
    count = ids % 7 + 1
    total = (ids % 1000) * 1.5
    return pa.table(
        {
            "event_hour": pa.array(
                1_704_067_200_000_000 + (ids // 1000) * HOUR_US, pa.timestamp("us", "UTC")
            ),
            "user_id": pa.array(ids % 1000, pa.int64()),
            "event_count": pa.array(count, pa.int64()),
            "total_session_duration": pa.array(total, pa.float64()),
            "avg_session_duration": pa.array(total / count, pa.float64()),
        }
    )


def one_way(way: str, rows: int) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="etl_first_merge_", dir=HERE / "work"))
    try:
        with private_ray():
            warehouse = DeltaWarehouse(str(folder))
            source = ray.data.range(rows, override_num_blocks=8).map_batches(
                metrics_rows, batch_format="numpy", batch_size=None
            )
            if way == "driver":
                # An empty table, as the platform created it before: the merge then goes through
                # DeltaTable.merge.
                DeltaTable.create(warehouse.location(HOURLY_USER_METRICS), HOURLY_USER_METRICS.schema)
            start_rss = driver_rss_mib("VmRSS")
            reset_driver_peak()
            start = time.perf_counter()
            result = warehouse.merge(source, HOURLY_USER_METRICS)
            seconds = time.perf_counter() - start
            growth = driver_rss_mib("VmHWM") - start_rss
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    if result.table_row_count != rows:
        raise RuntimeError(f"{way}: the table holds {result.table_row_count} rows, not {rows}")
    return {"seconds": round(seconds, 3), "driver_growth_mib": round(growth, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--way", choices=WAYS, help=argparse.SUPPRESS)  # one process's part
    args = parser.parse_args()
    if args.way:
        print(json.dumps(one_way(args.way, args.rows)))
        return
    (HERE / "work").mkdir(exist_ok=True)
    runs: dict[str, list[dict]] = {way: [] for way in WAYS}
    for repeat in range(args.repeats):
        for way in WAYS if repeat % 2 == 0 else WAYS[::-1]:
            command = [sys.executable, "-m", "benchmarks.first_merge", "--way", way, "--rows", str(args.rows)]
            done = subprocess.run(command, capture_output=True, text=True, cwd=HERE.parent)
            if done.returncode:
                raise RuntimeError(f"the {way} process failed: {done.stderr[-3000:]}")
            runs[way].append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"  {repeat} {way:7s} {runs[way][-1]}", flush=True)
    result = {
        "machine": machine(),
        "rows": args.rows,
        "runs": runs,
        "pairs": [
            round(driver["seconds"] / workers["seconds"], 2)
            for workers, driver in zip(runs["workers"], runs["driver"], strict=True)
        ],
    }
    out = HERE / "results" / "first_merge.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
