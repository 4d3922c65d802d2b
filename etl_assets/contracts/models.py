"""One pandera model per warehouse table: the single source of truth for its columns and rules.

Types, nullability, descriptions (shown in the Dagster UI), value rules and the key (``Config.unique``)
live here and nowhere else. A rule with ``raise_warning=True`` is a soft rule: rows breaking it are
loaded, counted and reported by the contract check with WARN severity; every other rule rejects the
row (tables fed from sources) or fails the write (tables computed by the platform).

Dataframe-level checks express rules across columns; their ``name`` is the rule's code.
"""

from typing import Annotated

import pandera.polars as pap
import polars as pl
from pandera.api.polars.types import PolarsData

UtcTimestamp = Annotated[pl.Datetime, "us", "UTC"]
Amount = Annotated[pl.Decimal, 12, 2]

SEGMENTS = ["consumer", "small_business", "enterprise"]
CHANNELS = ["web", "mobile", "store", "partner"]
EVENT_TYPES = ["page_view", "click", "add_to_cart", "checkout", "search"]
CURRENCIES = ["USD", "EUR", "GBP"]
TRANSACTION_STATUSES = ["pending", "completed", "failed", "refunded"]

EMAIL = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
NOT_BLANK = r"\S"
ISO_UTC = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?(Z|\+00:00)$"


def _holds(data: PolarsData, expression: pl.Expr) -> pl.LazyFrame:
    """A row-wise rule result: true where ``expression`` holds or cannot be judged (a null input is
    the not-null rule's business, so it is not counted twice)."""
    return data.lazyframe.select(expression.fill_null(True))


class _CustomerAttributes(pap.DataFrameModel):
    customer_id: pl.Int64 = pap.Field(nullable=False, description="CRM customer id")
    name: pl.String = pap.Field(nullable=True, description="customer name")
    email: pl.String = pap.Field(
        nullable=True, str_matches=EMAIL, raise_warning=True, description="email, lower-cased and stripped"
    )
    phone: pl.String = pap.Field(
        nullable=True,
        str_matches=r"^\d+$",
        raise_warning=True,
        description="phone number reduced to its digits",
    )
    customer_segment: pl.String = pap.Field(
        nullable=True, isin=SEGMENTS, raise_warning=True, description="segment of this version"
    )
    country: pl.String = pap.Field(
        nullable=True,
        str_matches=r"^[A-Z]{2}$",
        raise_warning=True,
        description="country code of this version",
    )
    created_at: UtcTimestamp = pap.Field(nullable=True, description="when the customer was created (UTC)")
    updated_at: UtcTimestamp = pap.Field(nullable=False, description="when this version took effect (UTC)")


class RawCustomers(_CustomerAttributes):
    updated_date: pl.Date = pap.Field(
        nullable=False, description="UTC day of updated_at: the daily partition"
    )

    class Config:
        name = "raw_customers"
        unique = ["customer_id", "updated_at"]

    @pap.dataframe_check(name="updated_date.is_day_of_updated_at")
    def _updated_date(cls, data: PolarsData) -> pl.LazyFrame:
        return _holds(data, pl.col("updated_at").dt.date() == pl.col("updated_date"))


class Customers(_CustomerAttributes):
    valid_from: UtcTimestamp = pap.Field(
        nullable=False, description="start of validity: this version's updated_at"
    )
    valid_to: UtcTimestamp = pap.Field(
        nullable=True, description="next version's updated_at; null for the current version"
    )
    is_current: pl.Boolean = pap.Field(nullable=False, description="true for the latest version loaded")

    class Config:
        name = "customers"
        unique = ["customer_id", "valid_from"]

    @pap.dataframe_check(name="valid_from.is_updated_at")
    def _valid_from(cls, data: PolarsData) -> pl.LazyFrame:
        return _holds(data, pl.col("valid_from") == pl.col("updated_at"))

    @pap.dataframe_check(name="valid_to.after_valid_from")
    def _valid_to(cls, data: PolarsData) -> pl.LazyFrame:
        return _holds(data, pl.col("valid_to") > pl.col("valid_from"))

    @pap.dataframe_check(name="is_current.iff_open")
    def _is_current(cls, data: PolarsData) -> pl.LazyFrame:
        return _holds(data, pl.col("is_current") == pl.col("valid_to").is_null())


class _OrderColumns(pap.DataFrameModel):
    order_id: pl.Int64 = pap.Field(nullable=False, description="order id")
    customer_id: pl.Int64 = pap.Field(nullable=False, description="ordering customer")
    order_ts: UtcTimestamp = pap.Field(nullable=False, description="when the order was placed (UTC)")
    order_amount: pl.Float64 = pap.Field(nullable=False, gt=0, description="order amount, > 0")
    quantity: pl.Int32 = pap.Field(nullable=True, ge=1, raise_warning=True, description="items ordered")
    channel: pl.String = pap.Field(
        nullable=True, isin=CHANNELS, raise_warning=True, description="sales channel"
    )
    order_date: pl.Date = pap.Field(nullable=False, description="UTC day of order_ts: the daily partition")


def _on_order_date(data: PolarsData) -> pl.LazyFrame:
    # For a lake row, order_date is the day of the folder it came from.
    return _holds(data, pl.col("order_ts").dt.date() == pl.col("order_date"))


# pandera renames a dataframe check inherited by a model that adds checks of its own, so each
# model declares it.
class Orders(_OrderColumns):
    class Config:
        name = "orders"
        unique = ["order_id"]

    @pap.dataframe_check(name="order_ts.on_order_date")
    def _on_order_date(cls, data: PolarsData) -> pl.LazyFrame:
        return _on_order_date(data)


class CustomerOrders(_OrderColumns):
    customer_name: pl.String = pap.Field(
        nullable=True, description="name of the customer version valid at order_ts"
    )
    customer_segment: pl.String = pap.Field(
        nullable=True, description="segment of the customer version valid at order_ts"
    )
    country: pl.String = pap.Field(
        nullable=True, description="country of the customer version valid at order_ts"
    )
    customer_valid_from: UtcTimestamp = pap.Field(
        nullable=True, description="valid_from of the matched customer version"
    )
    is_orphan: pl.Boolean = pap.Field(nullable=False, description="no customer version was valid at order_ts")

    class Config:
        name = "customer_orders"
        unique = ["order_id"]

    @pap.dataframe_check(name="order_ts.on_order_date")
    def _on_order_date(cls, data: PolarsData) -> pl.LazyFrame:
        return _on_order_date(data)

    @pap.dataframe_check(name="customer_valid_from.not_after_order_ts")
    def _point_in_time(cls, data: PolarsData) -> pl.LazyFrame:
        return _holds(data, pl.col("customer_valid_from") <= pl.col("order_ts"))

    @pap.dataframe_check(name="is_orphan.iff_no_customer_version")
    def _orphan(cls, data: PolarsData) -> pl.LazyFrame:
        return _holds(data, pl.col("is_orphan") == pl.col("customer_valid_from").is_null())


class DailyCustomerMetrics(pap.DataFrameModel):
    metric_date: pl.Date = pap.Field(nullable=False, description="UTC order day")
    customer_id: pl.Int64 = pap.Field(nullable=False, description="customer")
    customer_segment: pl.String = pap.Field(
        nullable=True, description="segment at order time; null for orphan orders"
    )
    # >= 0, not > 0: an order of less than half a cent is valid and its total rounds to 0.00.
    total_spend: pl.Float64 = pap.Field(
        nullable=False, ge=0, description="sum(order_amount), exact to the cent"
    )
    order_count: pl.Int64 = pap.Field(nullable=False, ge=1, description="count(order_id)")
    avg_order_value: pl.Float64 = pap.Field(nullable=False, ge=0, description="total_spend / order_count")

    class Config:
        name = "daily_customer_metrics"
        unique = ["metric_date", "customer_id", "customer_segment"]

    @pap.dataframe_check(name="avg_order_value.is_total_over_count")
    def _average(cls, data: PolarsData) -> pl.LazyFrame:
        expected = pl.col("total_spend") / pl.col("order_count")
        return _holds(data, (pl.col("avg_order_value") - expected).abs() <= 1e-9 * expected.abs())


class EventLines(pap.DataFrameModel):
    """One line of a landing file, as parsed (the source's contract; the table's is ``Events``)."""

    event_id: pl.String = pap.Field(nullable=False, str_contains=NOT_BLANK, description="event id")
    user_id: pl.Int64 = pap.Field(nullable=False, description="user (CRM customer id)")
    event_type: pl.String = pap.Field(nullable=False, str_contains=NOT_BLANK, description="what happened")
    timestamp: pl.String = pap.Field(
        nullable=False, str_matches=ISO_UTC, description="when it happened: ISO 8601 in UTC"
    )
    session_duration: pl.Float64 = pap.Field(
        nullable=False, ge=0, description="session length in seconds, >= 0"
    )

    class Config:
        name = "events_landing"


class Events(pap.DataFrameModel):
    event_id: pl.String = pap.Field(
        nullable=False, str_contains=NOT_BLANK, description="event id, unique across all batches"
    )
    user_id: pl.Int64 = pap.Field(nullable=False, description="user (CRM customer id)")
    event_type: pl.String = pap.Field(nullable=False, str_contains=NOT_BLANK, description="what happened")
    timestamp: UtcTimestamp = pap.Field(nullable=False, description="when it happened (UTC)")
    session_duration: pl.Float64 = pap.Field(
        nullable=False, ge=0, description="session length in seconds, >= 0"
    )
    event_hour: UtcTimestamp = pap.Field(nullable=False, description="timestamp truncated to the hour (UTC)")
    day_of_week: pl.Int8 = pap.Field(
        nullable=False,
        in_range={"min_value": 0, "max_value": 6},
        description="0 = Monday ... 6 = Sunday (UTC)",
    )
    is_weekend: pl.Boolean = pap.Field(nullable=False, description="Saturday or Sunday (UTC)")
    source_file: pl.String = pap.Field(
        nullable=False, description="landing file the event was first loaded from"
    )
    line_number: pl.Int64 = pap.Field(nullable=False, ge=1, description="line of source_file, from 1")
    batch_id: pl.String = pap.Field(nullable=False, description="landing batch: the partition")

    class Config:
        name = "events"
        unique = ["event_id"]

    @pap.dataframe_check(name="event_hour.is_hour_of_timestamp")
    def _hour(cls, data: PolarsData) -> pl.LazyFrame:
        return _holds(data, pl.col("event_hour") == pl.col("timestamp").dt.truncate("1h"))

    @pap.dataframe_check(name="is_weekend.iff_saturday_or_sunday")
    def _weekend(cls, data: PolarsData) -> pl.LazyFrame:
        return _holds(data, pl.col("is_weekend") == (pl.col("day_of_week") >= 5))


class EventsRejects(pap.DataFrameModel):
    source_file: pl.String = pap.Field(nullable=False, description="landing file")
    line_number: pl.Int64 = pap.Field(nullable=False, ge=1, description="line of source_file, from 1")
    raw_line: pl.String = pap.Field(nullable=False, description="the line as delivered")
    reject_reason: pl.String = pap.Field(nullable=False, description="code of the first rule the line failed")
    failed_rules: pl.List(pl.String) = pap.Field(
        nullable=False, description="codes of every rule the line failed, in contract order"
    )
    run_id: pl.String = pap.Field(nullable=False, description="Dagster run that rejected the line")
    batch_id: pl.String = pap.Field(nullable=False, description="landing batch: the partition")

    class Config:
        name = "events_rejects"
        unique = ["source_file", "line_number"]


class HourlyUserMetrics(pap.DataFrameModel):
    event_hour: UtcTimestamp = pap.Field(nullable=False, description="hour (UTC)")
    user_id: pl.Int64 = pap.Field(nullable=False, description="user")
    event_count: pl.Int64 = pap.Field(nullable=False, ge=1, description="events of the user in the hour")
    total_session_duration: pl.Float64 = pap.Field(
        nullable=False, ge=0, description="sum(session_duration), to the microsecond"
    )
    avg_session_duration: pl.Float64 = pap.Field(
        nullable=False, ge=0, description="total_session_duration / event_count"
    )

    class Config:
        name = "hourly_user_metrics"
        unique = ["event_hour", "user_id"]


class Transactions(pap.DataFrameModel):
    transaction_id: pl.Int64 = pap.Field(nullable=False, description="transaction id")
    customer_id: pl.Int64 = pap.Field(nullable=True, description="customer")
    amount: Amount = pap.Field(nullable=False, description="amount; negative for a refund")
    currency: pl.String = pap.Field(
        nullable=True, isin=CURRENCIES, raise_warning=True, description="ISO currency code"
    )
    transaction_date: pl.Date = pap.Field(nullable=True, description="transaction day")
    status: pl.String = pap.Field(
        nullable=True,
        isin=TRANSACTION_STATUSES,
        raise_warning=True,
        description="status of the latest version",
    )
    updated_at: UtcTimestamp = pap.Field(
        nullable=False, description="when the latest version was written (UTC)"
    )
    transaction_month: pl.String = pap.Field(
        nullable=True, str_matches=r"^\d{4}-\d{2}$", description="YYYY-MM of transaction_date"
    )
    is_refund: pl.Boolean = pap.Field(nullable=False, description="amount < 0")
    processed_at: UtcTimestamp = pap.Field(
        nullable=False, description="when this version was loaded into the warehouse"
    )

    class Config:
        name = "transactions"
        unique = ["transaction_id"]

    @pap.dataframe_check(name="is_refund.iff_negative_amount")
    def _refund(cls, data: PolarsData) -> pl.LazyFrame:
        return _holds(data, pl.col("is_refund") == (pl.col("amount") < 0))
