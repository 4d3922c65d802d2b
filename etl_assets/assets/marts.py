"""Marts: orders joined point-in-time to customers, and daily customer metrics."""

import dagster as dg
import pyarrow as pa

from etl_assets import ray_steps
from etl_assets.assets.common import DAILY_MART_FRESHNESS, DAILY_RAY_ASSET, RAY_KINDS, source_failures
from etl_assets.assets.customers import customers
from etl_assets.assets.metadata import definition_metadata, materialize_result, same_columns
from etl_assets.contracts import CUSTOMER_ORDERS, CUSTOMERS, DAILY_CUSTOMER_METRICS, ORDERS
from etl_assets.day_buckets import bucketed_by_day, day_buckets
from etl_assets.partitions import window_days
from etl_assets.ray_steps import (
    broadcast_join,
    cluster_cpus,
    exchange,
    ignore_bucket,
    map_blocks,
    timed,
    union,
)
from etl_assets.resources import RayResource, WarehouseResource
from etl_assets.transforms.customer_orders import (
    DIMENSION_COLUMNS,
    join_point_in_time,
    prepare_dimension,
)
from etl_assets.transforms.metrics import combine_daily_metrics, partial_daily_metrics

CUSTOMER_ORDERS_LINEAGE = {
    **same_columns("orders", ORDERS.column_names),
    "customer_name": [("customers", "name")],
    "customer_segment": [("customers", "customer_segment")],
    "country": [("customers", "country")],
    "customer_valid_from": [("customers", "valid_from")],
    "is_orphan": [("customers", "valid_from"), ("orders", "order_ts")],
}
METRICS_LINEAGE = {
    "metric_date": [("customer_orders", "order_date")],
    "customer_id": [("customer_orders", "customer_id")],
    "customer_segment": [("customer_orders", "customer_segment")],
    "total_spend": [("customer_orders", "order_amount")],
    "order_count": [("customer_orders", "order_id")],
    "avg_order_value": [("customer_orders", "order_amount")],
}


@dg.asset(
    deps=["orders", customers],
    group_name="marts",
    kinds=RAY_KINDS,
    freshness_policy=DAILY_MART_FRESHNESS,
    **DAILY_RAY_ASSET,
    metadata=definition_metadata(CUSTOMER_ORDERS, CUSTOMER_ORDERS_LINEAGE),
)
def customer_orders(
    context: dg.AssetExecutionContext, ray_cluster: RayResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """Each order of the day joined point-in-time to the customer version valid at `order_ts`
    (the latest `valid_from <= order_ts`). Orders with no such version are kept as orphans
    (`is_orphan`, customer columns null): counted and checked, never silently dropped."""
    days = window_days(context)
    backend = warehouse.backend()
    with source_failures(), timed() as timer:
        joined = broadcast_join(
            backend.read(ORDERS, days),
            backend.read(CUSTOMERS, columns=DIMENSION_COLUMNS),
            pa.schema([CUSTOMERS.schema.field(c) for c in DIMENSION_COLUMNS]),
            prepare_dimension,
            join_point_in_time,
        )
        result = backend.replace_window(joined, [CUSTOMER_ORDERS], days).tables[CUSTOMER_ORDERS.name]
    return materialize_result(context, CUSTOMER_ORDERS, result, timer, CUSTOMER_ORDERS_LINEAGE)


@dg.asset(
    deps=[customer_orders],
    group_name="marts",
    kinds=RAY_KINDS,
    freshness_policy=DAILY_MART_FRESHNESS,
    **DAILY_RAY_ASSET,
    metadata=definition_metadata(DAILY_CUSTOMER_METRICS, METRICS_LINEAGE),
)
def daily_customer_metrics(
    context: dg.AssetExecutionContext, ray_cluster: RayResource, warehouse: WarehouseResource
) -> dg.MaterializeResult:
    """Per `metric_date, customer_id, customer_segment` (segment at order time; null for orphan
    orders): `total_spend = sum(order_amount)`, `order_count = count(order_id)`,
    `avg_order_value = mean(order_amount)`. Each block is aggregated where it lies; only the
    small partial sums are exchanged, by day and customer: a big day's customers in buckets of
    its own, consecutive small days sharing one, so the table gets a file per bucket of a big day
    and one per small day."""
    days = window_days(context)
    backend = warehouse.backend()
    columns = ["order_date", "customer_id", "customer_segment", "order_amount"]
    with source_failures(), timed() as timer:
        # Buckets by day (``day_buckets``): one file per bucket of a big day, one per small day.
        layouts = day_buckets(
            days,
            backend.partition_row_counts(CUSTOMER_ORDERS, days),
            cluster_cpus(),
            ray_steps.BUCKET_ROWS,
            ray_steps.EXCHANGE_BUCKETS_MOST,
        )
        metrics = union(
            [
                exchange(
                    map_blocks(
                        backend.read(CUSTOMER_ORDERS, layout.days, columns),
                        bucketed_by_day(partial_daily_metrics, "metric_date", "customer_id", layout),
                    ),
                    layout.buckets,
                    ignore_bucket(combine_daily_metrics),
                )
                for layout in layouts
            ]
        )
        result = backend.replace_window(metrics, [DAILY_CUSTOMER_METRICS], days).tables[
            DAILY_CUSTOMER_METRICS.name
        ]
    return materialize_result(context, DAILY_CUSTOMER_METRICS, result, timer, METRICS_LINEAGE)
