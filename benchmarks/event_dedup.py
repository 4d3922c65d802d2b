"""Benchmark (a load's de-duplication across batches): a batch's `events` step as the table grows.

    python -m benchmarks.event_dedup [--events-per-batch 50000 --history 14 56 112 --repeats 3]

`events` keeps an event once across all batches: a load drops the lines whose `event_id` another
batch already loaded. For each history size (batches already loaded), a table of `events` holding
that many batches of ``events-per-batch`` ids (written here straight to Delta, one file per batch,
ids spelled as the sample generator spells them; only `event_id` is read from them) and one new
landing batch: the generator's events plus re-deliveries of ``redelivered`` ids of the newest
loaded batch. The new batch's `events_and_rejects` step runs through `dagster.materialize`, the
two ways taking turns on one private Ray:

* ``now``: what the platform does: the load's files are parsed for their distinct ids first, which
  stay in the object store, and each read task of the loaded ids keeps only those among them;
* ``before``: the asset as it was: every loaded id read and sent through the exchange with the
  load's lines, without the first parse (``loaded_ids_to_compare`` replaced).

A rerun replaces the batch's partition, so each run leaves the same table. Each run must count
exactly the re-delivered lines as already loaded, and both ways must leave the same rows. Writes
``results/event_dedup.json``: each way's step seconds (every repeat, and the best) per size.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import dagster as dg
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from deltalake import DeltaTable, write_deltalake

from benchmarks.daily_chain import step_seconds
from benchmarks.event_hours import resources
from benchmarks.machine import machine
from benchmarks.private_ray import private_ray
from benchmarks.samples import HERE
from etl_assets import definitions
from etl_assets.assets import events as events_module
from etl_assets.contracts import EVENTS
from etl_assets.sample_data import generate_events_batch

NEW_BATCH = "new-batch"


def loaded_batch(seq: int, count: int) -> pa.Table:
    """A loaded batch of ``count`` events with the generator's ids (the other columns are filler:
    a load reads only `event_id` of other batches)."""
    ids = np.char.add(f"e{seq:05d}-", np.arange(count).astype(str))
    hour = pa.array(np.full(count, 1_704_067_200_000_000), pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    columns = {
        "event_id": pa.array(ids, pa.string()),
        "user_id": pa.array(np.arange(count) % 5_000 + 1, pa.int64()),
        "event_type": pa.array(["view"] * count, pa.string()),
        "timestamp": hour,
        "session_duration": pa.array(np.ones(count), pa.float64()),
        "event_hour": hour,
        "day_of_week": pa.array(np.zeros(count, np.int8), pa.int8()),
        "is_weekend": pa.array(np.zeros(count, bool), pa.bool_()),
        "source_file": pa.array([f"b{seq:05d}/part-0.jsonl"] * count, pa.string()),
        "line_number": pa.array(np.arange(1, count + 1), pa.int64()),
        "batch_id": pa.array([f"b{seq:05d}"] * count, pa.string()),
    }
    return pa.table({f.name: columns[f.name].cast(f.type) for f in EVENTS.schema}, schema=EVENTS.schema)


def history(warehouse: Path, batches: int, count: int) -> None:
    """``warehouse``'s `events` holding ``batches`` loaded batches (kept between runs)."""
    location = warehouse / EVENTS.name
    if location.exists():
        actions = pa.table(DeltaTable(str(location)).get_add_actions(flatten=True))
        if pc.sum(pc.not_equal(actions.column("partition.batch_id"), NEW_BATCH)).as_py() == batches:
            return
    shutil.rmtree(warehouse, ignore_errors=True)
    for seq in range(batches):
        write_deltalake(str(location), loaded_batch(seq, count), mode="append", partition_by=["batch_id"])


def landing(root: Path, newest: int, count: int, redelivered: int) -> None:
    """The new batch's landing file: the generator's ``count`` events and ``redelivered`` events
    of the loaded batch ``newest`` delivered again."""
    folder = root / "sources" / "landing" / "events" / NEW_BATCH
    folder.mkdir(parents=True, exist_ok=True)
    _, lines = generate_events_batch(
        np.random.default_rng(7), 1_704_067_200_000_000, count, np.arange(1, 5_001), 99_999
    )
    again = [
        json.dumps(
            {
                "event_id": f"e{newest:05d}-{i}",
                "user_id": 1,
                "event_type": "view",
                "timestamp": "2024-01-01T00:00:00Z",
                "session_duration": 1.0,
            }
        )
        for i in range(redelivered)
    ]
    (folder / "part-0.jsonl").write_text("\n".join(lines + again) + "\n")


NOW = events_module.loaded_ids_to_compare


def every_loaded_id(backend, others, files):
    """The load's comparison as it was: every loaded id, and no first parse of the load's files."""
    return backend.read(EVENTS, others, ["event_id"])


def run(root: Path, warehouse: Path, way: str) -> tuple[float, int]:
    """The new batch's `events_and_rejects` step as ``way`` runs it: its seconds and the lines it
    counted as already loaded."""
    events_module.loaded_ids_to_compare = NOW if way == "now" else every_loaded_id
    try:
        with dg.DagsterInstance.ephemeral() as instance:  # disposed in this thread (see daily_chain)
            instance.add_dynamic_partitions("event_batches", [NEW_BATCH])
            result = dg.materialize(
                [definitions.events_and_rejects],
                partition_key=NEW_BATCH,
                instance=instance,
                resources=resources(root, warehouse),
            )
    finally:
        events_module.loaded_ids_to_compare = NOW
    if not result.success:
        raise RuntimeError(f"the {way} run failed")
    events = {
        m.asset_key.to_user_string(): m.metadata
        for m in result.asset_materializations_for_node("events_and_rejects")
    }["events"]
    return step_seconds(result)["events_and_rejects"], events["duplicates_already_loaded"].value


def new_rows(warehouse: Path) -> pa.Table:
    table = DeltaTable(str(warehouse / EVENTS.name)).to_pyarrow_table()
    table = table.filter(pc.equal(table.column("batch_id"), NEW_BATCH))
    return table.sort_by([("event_id", "ascending")])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events-per-batch", type=int, default=50_000)
    parser.add_argument("--history", type=int, nargs="+", default=[14, 56, 112])
    parser.add_argument("--redelivered", type=int, default=1_500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=HERE / "work" / "event_dedup")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "event_dedup.json")
    args = parser.parse_args()
    sizes = []
    with private_ray() as ray_init:
        for batches in args.history:
            root, warehouse = args.work / f"data_{batches}", args.work / f"warehouse_{batches}"
            history(warehouse, batches, args.events_per_batch)
            landing(root, batches - 1, args.events_per_batch, args.redelivered)
            run(root, warehouse, "now")  # untimed: the workers' first imports
            seconds: dict[str, list[float]] = {"now": [], "before": []}
            left: dict[str, pa.Table] = {}
            for _ in range(args.repeats):
                for way in seconds:
                    step, already = run(root, warehouse, way)
                    if already != args.redelivered:
                        raise AssertionError(f"{way} counted {already} lines already loaded")
                    seconds[way].append(round(step, 3))
                    left[way] = new_rows(warehouse)
            if not left["now"].equals(left["before"]):
                raise AssertionError(f"the two ways left different rows at {batches} batches")
            best = {way: min(s) for way, s in seconds.items()}
            sizes.append(
                {
                    "loaded_batches": batches,
                    "loaded_events": batches * args.events_per_batch,
                    "new_batch_rows": left["now"].num_rows,
                    "already_loaded": args.redelivered,
                    "step_seconds": seconds,
                    "best_step_seconds": best,
                    "before_over_now": round(best["before"] / best["now"], 2),
                }
            )
            print(json.dumps(sizes[-1]), flush=True)
    report = {
        "benchmark": "event_dedup",
        "machine": machine(),
        "events_per_batch": args.events_per_batch,
        "ray_init_seconds": round(ray_init, 3),
        "sizes": sizes,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
