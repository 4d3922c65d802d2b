"""The warehouse tables' contracts, derived from their pandera models (``contracts/models.py``)."""

import pyarrow as pa

from etl_assets.contracts import models
from etl_assets.contracts.table_contract import Column, contract_from_model, rejects_contract

# Why a row was rejected: shared by every rejects table.
REASON_COLUMNS = (
    Column("reject_reason", pa.string(), "code of the first rule the row failed", nullable=False),
    Column(
        "failed_rules",
        pa.list_(pa.string()),
        "codes of every rule the row failed, in contract order",
        nullable=False,
    ),
    Column("run_id", pa.string(), "Dagster run that rejected the row", nullable=False),
)

RAW_CUSTOMERS = contract_from_model(models.RawCustomers, partition_column="updated_date")
CUSTOMERS = contract_from_model(models.Customers)
ORDERS = contract_from_model(models.Orders, partition_column="order_date", max_reject_rate=0.05)
ORDERS_REJECTS = rejects_contract(
    ORDERS, "orders_rejects", "the lake folder's day the row came from", REASON_COLUMNS
)
CUSTOMER_ORDERS = contract_from_model(models.CustomerOrders, partition_column="order_date")
DAILY_CUSTOMER_METRICS = contract_from_model(models.DailyCustomerMetrics, partition_column="metric_date")
EVENT_LINES = contract_from_model(models.EventLines)
EVENTS = contract_from_model(models.Events, partition_column="batch_id", max_reject_rate=0.05)
EVENTS_REJECTS = contract_from_model(models.EventsRejects, partition_column="batch_id")
HOURLY_USER_METRICS = contract_from_model(models.HourlyUserMetrics)
TRANSACTIONS = contract_from_model(models.Transactions)

ALL_TABLES = (
    RAW_CUSTOMERS,
    CUSTOMERS,
    ORDERS,
    ORDERS_REJECTS,
    CUSTOMER_ORDERS,
    DAILY_CUSTOMER_METRICS,
    EVENTS,
    EVENTS_REJECTS,
    HOURLY_USER_METRICS,
    TRANSACTIONS,
)
