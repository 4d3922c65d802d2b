"""Transactions: CRM change rows -> the warehouse's latest-version rows."""

from __future__ import annotations

from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc

from etl_assets.contracts import TRANSACTIONS, UTC_TS, conform
from etl_assets.contracts.validation import repeated
from etl_assets.transforms.common import first_row_of_each_group, to_utc_timestamp

SOURCE_COLUMNS = [
    "transaction_id",
    "customer_id",
    "amount",
    "currency",
    "transaction_date",
    "status",
    "updated_at",
]
AMOUNT = TRANSACTIONS.schema.field("amount").type


def _to_decimal(column: pa.ChunkedArray) -> pa.ChunkedArray:
    # SQLite hands NUMERIC back as floats; their shortest text form is the exact decimal written.
    if pa.types.is_floating(column.type) or pa.types.is_integer(column.type):
        column = pc.cast(column, pa.string())
    return pc.cast(column, AMOUNT)


def prepare_transactions(batch: pa.Table, processed_at: datetime) -> pa.Table:
    """Typed rows with ``transaction_month``, ``is_refund`` and ``processed_at``; when a read holds
    several versions of a transaction only the latest (by ``updated_at``) is kept."""
    if batch.num_rows == 0:
        return TRANSACTIONS.schema.empty_table()
    amount = _to_decimal(batch.column("amount"))
    day = batch.column("transaction_date")
    day = pc.cast(pc.cast(day, pa.timestamp("s")) if pa.types.is_string(day.type) else day, pa.date32())
    table = pa.table(
        {
            "transaction_id": pc.cast(batch.column("transaction_id"), pa.int64()),
            "customer_id": pc.cast(batch.column("customer_id"), pa.int64()),
            "amount": amount,
            "currency": batch.column("currency"),
            "transaction_date": day,
            "status": batch.column("status"),
            "updated_at": to_utc_timestamp(batch.column("updated_at")),
            "transaction_month": pc.strftime(day, format="%Y-%m"),
            "is_refund": pc.less(amount, pa.scalar(0, AMOUNT)),
            "processed_at": repeated(processed_at, batch.num_rows, UTC_TS),
        }
    )
    latest_first = table.sort_by([("transaction_id", "ascending"), ("updated_at", "descending")])
    latest = latest_first.filter(first_row_of_each_group(latest_first, ["transaction_id"]))
    return conform(latest, TRANSACTIONS)
