"""Orders: exact-duplicate collapse and validation of one lake day, split into loaded and rejected rows."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from etl_assets.transforms.common import first_failed_rule, first_row_of_each_group, utc_date
from etl_assets.transforms.tables import ORDERS, ORDERS_REJECTS, conform

LAKE_COLUMNS = ["order_id", "customer_id", "order_ts", "order_amount", "quantity", "channel"]
REASON = "reject_reason"
DUPLICATE = "duplicate"
# Materialization metadata key: exact duplicates collapsed per lake day (read by the accounting check).
DUPLICATES_PER_DAY = "duplicates_per_day"

# Checked in this order; a row is rejected for the first rule it fails.
REJECT_RULES: tuple[tuple[str, str], ...] = (
    ("null_order_id", "order_id is null"),
    ("null_customer_id", "customer_id is null"),
    ("null_order_ts", "order_ts is null"),
    ("non_positive_amount", "order_amount is null or <= 0"),
    ("order_ts_outside_partition", "order_ts is not on the day of the lake folder it came from"),
)
REJECT_REASONS = tuple(code for code, _ in REJECT_RULES)


def _rule_failures(batch: pa.Table) -> list[pa.ChunkedArray]:
    amount = batch.column("order_amount")
    ts = batch.column("order_ts")
    failures = [
        pc.is_null(batch.column("order_id")),
        pc.is_null(batch.column("customer_id")),
        pc.is_null(ts),
        pc.fill_null(pc.less_equal(amount, 0), True),
        pc.fill_null(pc.not_equal(utc_date(ts), batch.column("order_date")), False),
    ]
    return failures


def classify_orders(batch: pa.Table) -> pa.Table:
    """Tag every delivered row of one lake day with ``reject_reason``.

    Null for a valid order, ``duplicate`` for a second copy of an exact duplicate row, else the code
    of the first failed rule. ``batch`` must hold the whole day (all its copies meet here) and its
    ``order_date`` column says which lake folder each row came from.
    """
    first_copy = pa.array(first_row_of_each_group(batch, batch.column_names))
    reason = first_failed_rule(list(REJECT_REASONS), _rule_failures(batch))
    reason = pc.if_else(first_copy, reason, pa.scalar(DUPLICATE))
    return batch.append_column(REASON, reason)


def split_classified(batch: pa.Table) -> dict[str, pa.Table]:
    """``classify_orders`` output -> the rows for ``orders``, ``orders_rejects`` and the dropped copies."""
    reason = batch.column(REASON)
    valid = pc.is_null(reason)
    duplicate = pc.fill_null(pc.equal(reason, DUPLICATE), False)
    rejected = pc.and_(pc.invert(valid), pc.invert(duplicate))
    return {
        ORDERS.name: conform(batch.filter(valid), ORDERS),
        ORDERS_REJECTS.name: conform(batch.filter(rejected), ORDERS_REJECTS),
        DUPLICATE: batch.filter(duplicate).select(["order_date"]),
    }
