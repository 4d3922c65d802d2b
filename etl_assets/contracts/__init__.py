"""Table contracts: pandera models, the Arrow schemas and rules derived from them, and validation."""

from etl_assets.contracts.table_contract import (
    UTC_TS,
    Column,
    Rule,
    TableContract,
    arrow_type,
    conform,
)
from etl_assets.contracts.tables import (
    ALL_TABLES,
    CUSTOMER_ORDERS,
    CUSTOMERS,
    DAILY_CUSTOMER_METRICS,
    EVENT_LINES,
    EVENTS,
    EVENTS_REJECTS,
    HOURLY_USER_METRICS,
    ORDERS,
    ORDERS_REJECTS,
    RAW_CUSTOMERS,
    TRANSACTIONS,
)

__all__ = [
    "ALL_TABLES",
    "CUSTOMERS",
    "CUSTOMER_ORDERS",
    "Column",
    "DAILY_CUSTOMER_METRICS",
    "EVENT_LINES",
    "EVENTS",
    "EVENTS_REJECTS",
    "HOURLY_USER_METRICS",
    "ORDERS",
    "ORDERS_REJECTS",
    "RAW_CUSTOMERS",
    "Rule",
    "TRANSACTIONS",
    "TableContract",
    "UTC_TS",
    "arrow_type",
    "conform",
]
