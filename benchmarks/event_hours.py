"""Benchmark (pushdown, and rewriting only the days touched): a batch's hourly metrics as events pile up.

    python -m benchmarks.event_hours [--events-per-batch 50000 --days 7 28 56 --repeats 3]

A landing zone of two event batches a day (the sample generator's: each batch's events span 13
hours, one of them shared with the batch before, and 3 % of them re-deliver the batch before's).
Three ways of running `hourly_user_metrics` each keep a warehouse of their own, loaded with
`events` and `hourly_user_metrics` up to each history size in ``--days`` (one single-run
backfill per size step, through `dagster.materialize`, by the way's own code):

* ``now``: what the platform does: the touched hours' events read with
  ``read(where_in=("event_hour", hours))``, which opens only the files of `events` whose recorded
  least and greatest `event_hour` surround one of them, and written with ``replace_where``: the
  workers rewrite only the files of `hourly_user_metrics` that hold those hours (a file per day);
* ``pruned_read``: the same read, written as before, by ``merge(delete_unmatched_in=)``
  (deltalake's merge in the driver, which scans every file of the table);
* ``before``: the asset as it was: every file of `events` read and the touched hours' rows kept
  by a task after, then the merge.

Then the newest batch's `hourly_user_metrics` runs again on each warehouse, the ways taking
turns on one private Ray. A rerun recomputes the same hours, so each table must stay as its
load left it, and the three tables must be equal. For each size: the rows and files of
`events`, the rows in the files the pruned read opens (counted here from the Delta log), the
files of each way's `hourly_user_metrics`, and each way's step seconds (every repeat, and the
best). Writes ``results/event_hours.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from datetime import timedelta
from functools import partial
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable

from benchmarks.daily_chain import step_seconds
from benchmarks.machine import machine
from benchmarks.private_ray import private_ray
from benchmarks.samples import HERE, sample
from etl_assets import definitions
from etl_assets.contracts import EVENTS, HOURLY_USER_METRICS
from etl_assets.resources import RayResource, SourcesResource, WarehouseResource
from etl_assets.warehouse.delta import DeltaWarehouse

EVENT_ASSETS = [definitions.events_and_rejects, definitions.hourly_user_metrics]
PRUNED_READ = DeltaWarehouse.read


def keep_rows(block: pa.Table, column: str, values: pa.Array) -> pa.Table:
    """Runs in a Ray task: the rows whose ``column`` is one of ``values`` (the filter of before)."""
    return block.filter(pc.is_in(block.column(column), value_set=values))


def full_read(self, table, partitions=None, columns=None, where_in=None):
    """``DeltaWarehouse.read`` as it was: every file read, the wanted rows kept after."""
    ds = PRUNED_READ(self, table, partitions, columns)
    if where_in is None:
        return ds
    column, values = where_in
    wanted = pa.array(list(values), table.schema.field(column).type)
    return ds.map_batches(
        partial(keep_rows, column=column, values=wanted), batch_format="pyarrow", batch_size=None
    )


REPLACE_WHERE = DeltaWarehouse.replace_where


def merge_instead(self, ds, target, column, values):
    """The write of before: a merge that deletes the rows of the hours the source does not hold."""
    return self.merge(ds, target, delete_unmatched_in=(column, list(values)))


# Each way's read and write of `hourly_user_metrics`.
WAYS = {
    "now": (PRUNED_READ, REPLACE_WHERE),
    "pruned_read": (PRUNED_READ, merge_instead),
    "before": (full_read, merge_instead),
}


def run_as(way: str, *args) -> dict:
    """``run`` with the warehouse reading and writing as ``way`` does."""
    DeltaWarehouse.read, DeltaWarehouse.replace_where = WAYS[way]
    try:
        return run(*args)
    finally:
        DeltaWarehouse.read, DeltaWarehouse.replace_where = PRUNED_READ, REPLACE_WHERE


def resources(root: Path, warehouse: Path) -> dict:
    return {
        "ray_cluster": RayResource(),
        "sources": SourcesResource(crm_url="sqlite:///unused.db", data_dir=str(root)),
        "warehouse": WarehouseResource(root=str(warehouse)),
    }


def run(root: Path, warehouse: Path, assets: list, batches: list[str], everything: list[str]) -> dict:
    """One run of ``assets`` over ``batches`` (a single-run backfill when there are several)."""
    with dg.DagsterInstance.ephemeral() as instance:  # disposed in this thread (see daily_chain)
        instance.add_dynamic_partitions("event_batches", everything)
        tags = {
            "dagster/asset_partition_range_start": batches[0],
            "dagster/asset_partition_range_end": batches[-1],
        }
        result = dg.materialize(assets, tags=tags, resources=resources(root, warehouse), instance=instance)
    if not result.success:
        raise RuntimeError(f"the run of batches {batches[0]} to {batches[-1]} failed")
    return step_seconds(result)


def hourly_table(warehouse: Path) -> pa.Table:
    table = DeltaTable(str(warehouse / HOURLY_USER_METRICS.name)).to_pyarrow_table()
    return table.sort_by([("event_hour", "ascending"), ("user_id", "ascending")])


def file_count(warehouse: Path) -> int:
    return len(DeltaTable(str(warehouse / HOURLY_USER_METRICS.name)).file_uris())


def rows_in_opened_files(warehouse: Path, batch: str) -> tuple[int, int, int, int]:
    """The rows and files of `events`, and those of the files a read of ``batch``'s hours opens:
    files whose least and greatest hour (to the millisecond, rounded up) surround one of them."""
    actions = pa.table(DeltaTable(str(warehouse / EVENTS.name)).get_add_actions(flatten=True))
    of_batch = actions.filter(pc.equal(actions.column("partition.batch_id"), batch))
    hours = set()
    for low, high in zip(
        of_batch.column("min.event_hour").to_pylist(), of_batch.column("max.event_hour").to_pylist()
    ):
        hour = low.replace(minute=0, second=0, microsecond=0)
        while hour <= high:
            hours.add(hour)
            hour += timedelta(hours=1)
    opened = [
        any(low <= h <= high for h in hours)
        for low, high in zip(
            actions.column("min.event_hour").to_pylist(), actions.column("max.event_hour").to_pylist()
        )
    ]
    counts = actions.column("num_records").to_pylist()
    return (
        sum(counts),
        actions.num_rows,
        sum(c for c, o in zip(counts, opened) if o),
        sum(opened),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events-per-batch", type=int, default=50_000)
    parser.add_argument("--days", type=int, nargs="+", default=[7, 28, 56])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    sizes = sorted(args.days)
    (HERE / "work").mkdir(exist_ok=True)
    root = sample(
        HERE / "work" / f"event_hours_{args.events_per_batch}_{sizes[-1]}",
        orders=100,
        customers=20_000,
        days=sizes[-1],
        events_per_batch=args.events_per_batch,
    )
    batches = sorted(p.name for p in (root / "sources" / "landing" / "events").iterdir())
    warehouses = {way: HERE / "work" / f"event_hours_{way}" for way in WAYS}
    for folder in warehouses.values():
        shutil.rmtree(folder, ignore_errors=True)
    results = []
    try:
        with private_ray():
            loaded = 0
            for days in sizes:
                history = batches[: 2 * days]
                load_seconds, tables = {}, {}
                for way, warehouse in warehouses.items():
                    start = time.perf_counter()
                    run_as(way, root, warehouse, EVENT_ASSETS, history[loaded:], history)
                    load_seconds[way] = round(time.perf_counter() - start, 1)
                    tables[way] = hourly_table(warehouse)
                if not all(table.equals(tables["now"]) for table in tables.values()):
                    raise RuntimeError(f"the ways' hourly_user_metrics differ after {days} days")
                loaded = len(history)
                newest = history[-1]
                seconds: dict[str, list[float]] = {way: [] for way in WAYS}
                for repeat in range(args.repeats):
                    for way in WAYS if repeat % 2 == 0 else list(WAYS)[::-1]:
                        hourly = [definitions.hourly_user_metrics]
                        steps = run_as(way, root, warehouses[way], hourly, [newest], history)
                        seconds[way].append(steps["hourly_user_metrics"])
                        if not hourly_table(warehouses[way]).equals(tables[way]):
                            raise RuntimeError(f"{way}: hourly_user_metrics changed on a rerun of {newest}")
                total_rows, total_files, opened_rows, opened_files = rows_in_opened_files(
                    warehouses["now"], newest
                )
                best = {way: min(s) for way, s in seconds.items()}
                entry = {
                    "days": days,
                    "batches": len(history),
                    "events_rows": total_rows,
                    "events_files": total_files,
                    "pruned_read_rows": opened_rows,
                    "pruned_read_files": opened_files,
                    "hourly_rows": tables["now"].num_rows,
                    "hourly_files": {way: file_count(w) for way, w in warehouses.items()},
                    "load_seconds": load_seconds,
                    "step_seconds": seconds,
                    "best": best,
                    "over_now": {way: round(b / best["now"], 2) for way, b in best.items()},
                }
                results.append(entry)
                print(json.dumps(entry), flush=True)
    finally:
        for folder in warehouses.values():
            shutil.rmtree(folder, ignore_errors=True)
    out = HERE / "results" / "event_hours.json"
    out.write_text(
        json.dumps(
            {"machine": machine(), "events_per_batch": args.events_per_batch, "sizes": results}, indent=2
        )
        + "\n"
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
