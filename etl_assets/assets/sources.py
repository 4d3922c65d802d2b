"""The sources, shown in the lineage graph as external assets (nothing here materializes them)."""

import dagster as dg

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

SOURCE_SPECS = [crm_customers, orders_lake]
