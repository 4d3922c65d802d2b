"""The warehouse tables' columns: Arrow type, nullability and meaning, in one place.

The writer enforces these schemas, the assets publish them as ``dagster/column_schema`` and the
tests compare against them, so a column changes here and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

UTC_TS = pa.timestamp("us", tz="UTC")


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    description: str
    nullable: bool = True


@dataclass(frozen=True)
class TableContract:
    """A table's columns, its key and the date column its daily partitions are cut on."""

    name: str
    columns: tuple[Column, ...]
    keys: tuple[str, ...] = ()
    partition_column: str | None = None

    @property
    def schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, c.type, nullable=c.nullable) for c in self.columns])

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


def _col(name: str, type_: pa.DataType, description: str, nullable: bool = True) -> Column:
    return Column(name, type_, description, nullable)


_CUSTOMER_ATTRIBUTES = (
    _col("customer_id", pa.int64(), "CRM customer id", nullable=False),
    _col("name", pa.string(), "customer name"),
    _col("email", pa.string(), "email, lower-cased and stripped"),
    _col("phone", pa.string(), "phone number reduced to its digits"),
    _col("customer_segment", pa.string(), "segment of this version"),
    _col("country", pa.string(), "country code of this version"),
    _col("created_at", UTC_TS, "when the customer was created (UTC)"),
    _col("updated_at", UTC_TS, "when this version took effect (UTC)", nullable=False),
)

RAW_CUSTOMERS = TableContract(
    name="raw_customers",
    columns=(
        *_CUSTOMER_ATTRIBUTES,
        _col("updated_date", pa.date32(), "UTC day of updated_at: the daily partition", nullable=False),
    ),
    keys=("customer_id", "updated_at"),
    partition_column="updated_date",
)

CUSTOMERS = TableContract(
    name="customers",
    columns=(
        *_CUSTOMER_ATTRIBUTES,
        _col("valid_from", UTC_TS, "start of validity: this version's updated_at", nullable=False),
        _col("valid_to", UTC_TS, "next version's updated_at; null for the current version"),
        _col("is_current", pa.bool_(), "true for the latest version loaded", nullable=False),
    ),
    keys=("customer_id", "valid_from"),
)

_ORDER_COLUMNS = (
    _col("order_id", pa.int64(), "order id", nullable=False),
    _col("customer_id", pa.int64(), "ordering customer", nullable=False),
    _col("order_ts", UTC_TS, "when the order was placed (UTC)", nullable=False),
    _col("order_amount", pa.float64(), "order amount, > 0", nullable=False),
    _col("quantity", pa.int32(), "items ordered"),
    _col("channel", pa.string(), "sales channel"),
    _col("order_date", pa.date32(), "UTC day of order_ts: the daily partition", nullable=False),
)

ORDERS = TableContract(
    name="orders", columns=_ORDER_COLUMNS, keys=("order_id",), partition_column="order_date"
)

ORDERS_REJECTS = TableContract(
    name="orders_rejects",
    columns=(
        _col("order_id", pa.int64(), "order id as delivered"),
        _col("customer_id", pa.int64(), "customer id as delivered"),
        _col("order_ts", UTC_TS, "order timestamp as delivered"),
        _col("order_amount", pa.float64(), "amount as delivered"),
        _col("quantity", pa.int32(), "quantity as delivered"),
        _col("channel", pa.string(), "channel as delivered"),
        _col("order_date", pa.date32(), "the lake folder's day the row came from", nullable=False),
        _col("reject_reason", pa.string(), "first rule the row failed", nullable=False),
    ),
    partition_column="order_date",
)

CUSTOMER_ORDERS = TableContract(
    name="customer_orders",
    columns=(
        *_ORDER_COLUMNS,
        _col("customer_name", pa.string(), "name of the customer version valid at order_ts"),
        _col("customer_segment", pa.string(), "segment of the customer version valid at order_ts"),
        _col("country", pa.string(), "country of the customer version valid at order_ts"),
        _col("customer_valid_from", UTC_TS, "valid_from of the matched customer version"),
        _col("is_orphan", pa.bool_(), "no customer version was valid at order_ts", nullable=False),
    ),
    keys=("order_id",),
    partition_column="order_date",
)

DAILY_CUSTOMER_METRICS = TableContract(
    name="daily_customer_metrics",
    columns=(
        _col("metric_date", pa.date32(), "UTC order day", nullable=False),
        _col("customer_id", pa.int64(), "customer", nullable=False),
        _col("customer_segment", pa.string(), "segment at order time; null for orphan orders"),
        _col("total_spend", pa.float64(), "sum(order_amount), exact to the cent", nullable=False),
        _col("order_count", pa.int64(), "count(order_id)", nullable=False),
        _col("avg_order_value", pa.float64(), "total_spend / order_count", nullable=False),
    ),
    keys=("metric_date", "customer_id", "customer_segment"),
    partition_column="metric_date",
)


def conform(table: pa.Table, contract: TableContract) -> pa.Table:
    """Select and cast ``table`` to the contract's columns, naming the column that does not fit."""
    missing = [c for c in contract.column_names if c not in table.column_names]
    if missing:
        raise ValueError(f"{contract.name}: missing column(s) {', '.join(missing)}")
    arrays = []
    for field in contract.schema:
        column = table.column(field.name)
        try:
            arrays.append(column.cast(field.type) if column.type != field.type else column)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise ValueError(
                f"{contract.name}.{field.name}: cannot cast {column.type} to {field.type}: {exc}"
            ) from exc
        if not field.nullable and arrays[-1].null_count:
            raise ValueError(
                f"{contract.name}.{field.name}: {arrays[-1].null_count} null value(s) in a non-null column"
            )
    return pa.Table.from_arrays(arrays, schema=contract.schema)


EVENTS = TableContract(
    name="events",
    columns=(
        _col("event_id", pa.string(), "event id, unique across all batches", nullable=False),
        _col("user_id", pa.int64(), "user (CRM customer id)", nullable=False),
        _col("event_type", pa.string(), "what happened", nullable=False),
        _col("timestamp", UTC_TS, "when it happened (UTC)", nullable=False),
        _col("session_duration", pa.float64(), "session length in seconds, >= 0", nullable=False),
        _col("event_hour", UTC_TS, "timestamp truncated to the hour (UTC)", nullable=False),
        _col("day_of_week", pa.int8(), "0 = Monday ... 6 = Sunday (UTC)", nullable=False),
        _col("is_weekend", pa.bool_(), "Saturday or Sunday (UTC)", nullable=False),
        _col("source_file", pa.string(), "landing file the event was first loaded from", nullable=False),
        _col("line_number", pa.int64(), "line of source_file, from 1", nullable=False),
        _col("batch_id", pa.string(), "landing batch: the partition", nullable=False),
    ),
    keys=("event_id",),
    partition_column="batch_id",
)

EVENTS_REJECTS = TableContract(
    name="events_rejects",
    columns=(
        _col("source_file", pa.string(), "landing file", nullable=False),
        _col("line_number", pa.int64(), "line of source_file, from 1", nullable=False),
        _col("raw_line", pa.string(), "the line as delivered", nullable=False),
        _col("reject_reason", pa.string(), "why the line was not loaded", nullable=False),
        _col("batch_id", pa.string(), "landing batch: the partition", nullable=False),
    ),
    keys=("source_file", "line_number"),
    partition_column="batch_id",
)

HOURLY_USER_METRICS = TableContract(
    name="hourly_user_metrics",
    columns=(
        _col("event_hour", UTC_TS, "hour (UTC)", nullable=False),
        _col("user_id", pa.int64(), "user", nullable=False),
        _col("event_count", pa.int64(), "events of the user in the hour", nullable=False),
        _col(
            "total_session_duration",
            pa.float64(),
            "sum(session_duration), to the microsecond",
            nullable=False,
        ),
        _col("avg_session_duration", pa.float64(), "total_session_duration / event_count", nullable=False),
    ),
    keys=("event_hour", "user_id"),
)

TRANSACTIONS = TableContract(
    name="transactions",
    columns=(
        _col("transaction_id", pa.int64(), "transaction id", nullable=False),
        _col("customer_id", pa.int64(), "customer"),
        _col("amount", pa.decimal128(12, 2), "amount; negative for a refund", nullable=False),
        _col("currency", pa.string(), "ISO currency code"),
        _col("transaction_date", pa.date32(), "transaction day"),
        _col("status", pa.string(), "status of the latest version"),
        _col("updated_at", UTC_TS, "when the latest version was written (UTC)", nullable=False),
        _col("transaction_month", pa.string(), "YYYY-MM of transaction_date"),
        _col("is_refund", pa.bool_(), "amount < 0", nullable=False),
        _col("processed_at", UTC_TS, "when this version was loaded into the warehouse", nullable=False),
    ),
    keys=("transaction_id",),
)
