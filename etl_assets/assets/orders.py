"""Orders: the valid, de-duplicated orders of each day and the rows rejected on the way."""

from collections.abc import Iterator
from functools import partial

import dagster as dg

from etl_assets.assets.common import DAILY_RAY_ASSET, RAY_KINDS, source_failures
from etl_assets.assets.metadata import (
    definition_metadata,
    materialize_results,
    rule_failures_by_partition,
    same_columns,
)
from etl_assets.assets.sources import orders_lake
from etl_assets.contracts import ORDERS, ORDERS_REJECTS
from etl_assets.partitions import window_days
from etl_assets.ray_steps import timed
from etl_assets.resources import RayResource, SourcesResource, WarehouseResource
from etl_assets.sources.orders_lake import LAKE_SCHEMA, inspect_days, read_orders_days
from etl_assets.transforms.orders import DUPLICATE, DUPLICATES_COLLAPSED, classify_orders, split_classified

ORDERS_LINEAGE = {
    **same_columns("orders_lake", LAKE_SCHEMA.names),
    "order_date": [("orders_lake", "order_ts")],
}
REJECTS_LINEAGE = {
    **same_columns("orders_lake", LAKE_SCHEMA.names),
    "order_date": [("orders_lake", "date")],
    "reject_reason": [(("orders_lake", c)) for c in LAKE_SCHEMA.names],
}

ORDERS_DESCRIPTION = """Valid orders of each UTC day (by `order_ts`), exact duplicate deliveries
collapsed. A row is valid when it keeps every rejecting rule of the `orders` contract: an order
id, a customer id and a timestamp, a positive amount, its `order_ts` on the day of the lake folder
it came from, and an order id no other row of the day has; other rows go to `orders_rejects`.
Rows in = rows loaded + rows rejected + duplicates collapsed."""

REJECTS_DESCRIPTION = """Lake rows that broke a rejecting rule of the `orders` contract, as delivered,
with `reject_reason` (the code of the first rule broken, such as `order_id.not_null`,
`order_amount.greater_than` or `order_ts.on_order_date`), `failed_rules` (every rule broken), the
`run_id` that rejected them, and the lake folder's day as `order_date`."""


@dg.multi_asset(
    specs=[
        dg.AssetSpec(
            "orders",
            deps=[orders_lake],
            group_name="staging",
            kinds=RAY_KINDS,
            description=ORDERS_DESCRIPTION,
            metadata=definition_metadata(ORDERS, ORDERS_LINEAGE),
        ),
        dg.AssetSpec(
            "orders_rejects",
            deps=[orders_lake],
            group_name="staging",
            kinds=RAY_KINDS,
            description=REJECTS_DESCRIPTION,
            metadata=definition_metadata(ORDERS_REJECTS, REJECTS_LINEAGE),
        ),
    ],
    **DAILY_RAY_ASSET,
)
def orders_and_rejects(
    context: dg.AssetExecutionContext,
    ray_cluster: RayResource,
    sources: SourcesResource,
    warehouse: WarehouseResource,
) -> Iterator[dg.MaterializeResult]:
    """Read each day's lake folder in one Ray task, collapse exact duplicates, validate, and
    replace the window's days of `orders` and `orders_rejects`."""
    days = window_days(context)
    backend = warehouse.backend()
    with source_failures(), timed() as timer:
        lake_days = inspect_days(sources.orders_lake_dir, days)
        ds = read_orders_days(lake_days, partial(classify_orders, run_id=context.run_id))
        written = backend.replace_window(ds, [ORDERS, ORDERS_REJECTS], days, route=split_classified)
    ignored = {d.day.isoformat(): d.ignored_columns for d in lake_days if d.ignored_columns}
    if ignored:
        context.log.warning(f"orders lake: columns not in the contract were ignored: {ignored}")
    duplicates = written.other_counts_per_partition.get(DUPLICATE, {})
    rules = rule_failures_by_partition(written, [d.isoformat() for d in days])
    per_day = {}
    for lake_day in lake_days:
        day = lake_day.day.isoformat()
        good = written.tables[ORDERS.name].rows_per_day.get(day, 0)
        bad = written.tables[ORDERS_REJECTS.name].rows_per_day.get(day, 0)
        per_day[day] = {
            "rows_in": lake_day.rows,
            "rows_loaded": good,
            "rows_rejected": bad,
            DUPLICATES_COLLAPSED: duplicates.get(day, 0),
            "reject_rate": round(bad / lake_day.rows, 6) if lake_day.rows else 0.0,
            **rules[day],
            "source_columns_ignored": dg.MetadataValue.json(lake_day.ignored_columns),
        }
    rows_in = sum(d.rows for d in lake_days)
    tables = [(ORDERS, ORDERS_LINEAGE), (ORDERS_REJECTS, REJECTS_LINEAGE)]
    yield from materialize_results(context, written, timer, tables, rows_in, per_day)
