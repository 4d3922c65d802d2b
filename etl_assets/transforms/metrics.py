"""Daily customer metrics as partial aggregates that combine exactly across blocks."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from etl_assets.contracts import DAILY_CUSTOMER_METRICS, conform
from etl_assets.transforms.common import round_to

GROUP_KEYS = ["metric_date", "customer_id", "customer_segment"]
# What ``partial_daily_metrics`` returns.
PARTIAL_METRICS = pa.schema(
    [
        ("metric_date", pa.date32()),
        ("customer_id", pa.int64()),
        ("customer_segment", pa.string()),
        ("total_spend", pa.float64()),
        ("order_count", pa.int64()),
    ]
)


def partial_daily_metrics(customer_orders: pa.Table) -> pa.Table:
    """Per-block sums and counts per (metric_date, customer_id, customer_segment)."""
    renamed = customer_orders.select(["order_date", "customer_id", "customer_segment", "order_amount"])
    renamed = renamed.rename_columns(["metric_date", "customer_id", "customer_segment", "order_amount"])
    partial = renamed.group_by(GROUP_KEYS, use_threads=False).aggregate(
        [("order_amount", "sum"), ("order_amount", "count")]
    )
    return partial.rename_columns(PARTIAL_METRICS.names).cast(PARTIAL_METRICS)


def combine_daily_metrics(partials: pa.Table) -> pa.Table:
    """Partials of the same keys (co-located by the caller) -> final metric rows.

    ``total_spend`` is rounded to the cent: amounts are currency, and rounding makes the sum exact
    whatever order the blocks were added in, so reruns write identical values.
    """
    combined = partials.group_by(GROUP_KEYS, use_threads=False).aggregate(
        [("total_spend", "sum"), ("order_count", "sum")]
    )
    total = round_to(combined.column("total_spend_sum"), 2)
    count = pc.cast(combined.column("order_count_sum"), pa.int64())
    table = pa.table(
        {
            **{k: combined.column(k) for k in GROUP_KEYS},
            "total_spend": total,
            "order_count": count,
            "avg_order_value": pc.divide(total, pc.cast(count, pa.float64())),
        }
    )
    return conform(table.sort_by([(k, "ascending") for k in GROUP_KEYS]), DAILY_CUSTOMER_METRICS)
