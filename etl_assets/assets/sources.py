"""The sources, shown in the lineage graph as external assets (nothing here materializes them)."""

import dagster as dg

from etl_assets.assets.metadata import column_schema
from etl_assets.contracts import EVENT_LINES

crm_customers = dg.AssetSpec(
    "crm_customers",
    group_name="sources",
    kinds={"sqlite", "postgres"},
    description="CRM `customers` table: one row per customer version, `updated_at` in UTC "
    "(ETL_CRM_URL; SQLite by default, PostgreSQL by URL).",
)

orders_lake = dg.AssetSpec(
    "orders_lake",
    group_name="sources",
    kinds={"parquet"},
    description="Orders lake: hive-partitioned Parquet under `lake/orders/date=YYYY-MM-DD/`, "
    "delivered at least once.",
)

events_landing = dg.AssetSpec(
    "events_landing",
    group_name="sources",
    kinds={"json"},
    description="Events landing zone: one folder per batch under `landing/events/<batch_id>/`, "
    "JSON lines; events may be re-delivered in later batches. Each line is judged against the "
    "landing contract shown here; lines that break it go to `events_rejects`.",
    metadata={"dagster/column_schema": column_schema(EVENT_LINES)},
)

crm_transactions = dg.AssetSpec(
    "crm_transactions",
    group_name="sources",
    kinds={"sqlite", "postgres"},
    description="CRM `transactions` table: updated in place, `updated_at` moves forward on each change.",
)

SOURCE_SPECS = [crm_customers, orders_lake, events_landing, crm_transactions]
