"""Orders: exact-duplicate collapse and validation of one lake day, split into loaded and rejected rows."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from etl_assets.contracts import ORDERS, ORDERS_REJECTS, conform
from etl_assets.contracts.validation import judge_rows, repeated, rule_hits, spread_lists
from etl_assets.transforms.common import first_copy_of_each_row

LAKE_COLUMNS = ["order_id", "customer_id", "order_ts", "order_amount", "quantity", "channel"]
REASON = "reject_reason"
FAILED = "failed_rules"
SOFT = "__soft_rules"
DUPLICATE = "duplicate"
# Materialization metadata key: the exact duplicates a day's load collapsed (read by the accounting
# checks), and the dict by day over the run's window that materializations carried before it.
DUPLICATES_COLLAPSED = "duplicates_collapsed"
LEGACY_DUPLICATES_PER_DAY = "duplicates_per_day"


def classify_orders(batch: pa.Table, run_id: str) -> pa.Table:
    """Judge every delivered row of one lake day against the ``orders`` contract.

    Adds ``reject_reason`` (null for a valid order, ``duplicate`` for a second copy of an exact
    duplicate row, else the code of the first rule failed), ``failed_rules`` (every rejecting
    rule's code), the soft rules broken, and ``run_id``. ``batch`` must hold the whole day (all its
    copies meet here) and its ``order_date`` column says which lake folder each row came from, so
    the contract's ``order_ts.on_order_date`` rule rejects rows delivered to the wrong day.
    """
    first_copy = first_copy_of_each_row(batch, "order_id")
    verdicts = judge_rows(conform(batch.filter(first_copy), ORDERS, nulls_allowed=True), ORDERS)
    # Verdicts of first copies spread back over the delivery order; other copies are duplicates.
    position = np.cumsum(first_copy) - 1
    reason = verdicts.first_reason.take(pa.array(position, mask=~first_copy))
    reason = pc.if_else(pa.array(first_copy), reason, pa.scalar(DUPLICATE))
    return (
        batch.append_column(REASON, reason)
        .append_column(FAILED, spread_lists(verdicts.rejecting, first_copy))
        .append_column(SOFT, spread_lists(verdicts.soft, first_copy))
        .append_column("run_id", repeated(run_id, batch.num_rows, pa.string()))
    )


def split_classified(batch: pa.Table) -> dict[str, pa.Table]:
    """``classify_orders`` output -> rows for ``orders`` and ``orders_rejects``, the dropped copies,
    and one counted row per rule broken (``rule:<code>``, rejecting and soft rules alike)."""
    reason = batch.column(REASON)
    valid = pc.is_null(reason)
    duplicate = pc.fill_null(pc.equal(reason, DUPLICATE), False)
    rejected = pc.and_(pc.invert(valid), pc.invert(duplicate))
    day = batch.column(ORDERS.partition_column)
    return {
        ORDERS.name: conform(batch.filter(valid), ORDERS),
        ORDERS_REJECTS.name: conform(batch.filter(rejected), ORDERS_REJECTS),
        DUPLICATE: batch.filter(duplicate).select([ORDERS.partition_column]),
        **rule_hits(batch.column(FAILED), day, ORDERS.partition_column),
        **rule_hits(batch.column(SOFT), day, ORDERS.partition_column),
    }
