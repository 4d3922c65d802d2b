"""Run by tests in a process of its own (the tests' Ray is shared): runs of one check alone, as the
UI's "Execute check" launches them, with no Ray running (the load before them closes its own).

    python -m etl_assets_tests.check_only_probe SAMPLE_DIR WAREHOUSE DAY RAY_TEMP_DIR

Loads the day's orders, then runs ``orders_key_unique`` alone twice: as the small sample's day is
judged (in the driver), and with every window judged in Ray (``window_reads.LOCAL_ROWS = 0``).
Prints one JSON line per check run: its verdict, and what the run's Ray resource logged.
"""

import json
import sys
from pathlib import Path

import dagster as dg
import ray

from etl_assets import definitions
from etl_assets.checks import window_reads
from etl_assets.checks.rules import check_named, checks_alone
from etl_assets.resources import RayResource, SourcesResource, WarehouseResource

CHECK = "orders_key_unique"


def main() -> None:
    sample, warehouse, day, temp_dir = sys.argv[1:5]
    resources = {
        "ray_cluster": RayResource(temp_dir=temp_dir, object_store_memory_mb=256),
        "sources": SourcesResource(
            crm_url=f"sqlite:///{Path(sample) / 'sources' / 'crm.db'}", data_dir=sample
        ),
        "warehouse": WarehouseResource(root=warehouse),
    }
    assert dg.materialize([definitions.orders_and_rejects], partition_key=day, resources=resources).success
    defs = dg.Definitions(
        assets=[definitions.orders_and_rejects], asset_checks=[check_named(CHECK)], resources=resources
    )
    job = checks_alone(defs.resolve_implicit_global_asset_job_def(), [CHECK])
    for local_rows in (window_reads.LOCAL_ROWS, 0):
        window_reads.LOCAL_ROWS = local_rows
        instance = dg.DagsterInstance.ephemeral()
        result = job.execute_in_process(partition_key=day, instance=instance, raise_on_error=False)
        (found,) = result.get_asset_check_evaluations()
        said = [
            e.user_message
            for e in instance.all_logs(result.run_id)
            if e.user_message.startswith("ray_cluster:")
        ]
        print(
            json.dumps(
                {
                    "local_rows": local_rows,
                    "success": result.success,
                    "passed": found.passed,
                    "duplicate_keys": found.metadata["duplicate_keys"].value,
                    "ray_said": said,
                    "ray_left_running": ray.is_initialized(),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()
