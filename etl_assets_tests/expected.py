"""Independent computation of every daily table with DuckDB SQL over the source files.

Nothing here imports the platform's transforms: this is the second opinion the tests compare with.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import duckdb
import pandas as pd

# The daily tables, each computed below by a view of the same name.
DAILY_TABLES = [
    "raw_customers",
    "customers",
    "orders",
    "orders_rejects",
    "customer_orders",
    "daily_customer_metrics",
]


def connect(sample: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    with sqlite3.connect(sample / "sources" / "crm.db") as crm:
        customers = pd.read_sql("SELECT * FROM customers", crm)
    con.register("crm_customers_df", customers)
    lake = sample / "sources" / "lake" / "orders" / "*" / "*.parquet"
    con.execute(
        f"""
        CREATE VIEW lake AS
        SELECT * EXCLUDE (date), CAST(date AS DATE) AS folder_day
        FROM read_parquet('{lake}', hive_partitioning = true)
        """
    )
    con.execute(
        """
        CREATE VIEW raw_customers AS
        SELECT DISTINCT
            CAST(customer_id AS BIGINT) AS customer_id, name,
            lower(trim(email)) AS email,
            regexp_replace(phone, '[^0-9]', '', 'g') AS phone,
            customer_segment, country,
            CAST(CAST(created_at AS TIMESTAMP) AS TIMESTAMPTZ) AS created_at,
            CAST(CAST(updated_at AS TIMESTAMP) AS TIMESTAMPTZ) AS updated_at,
            CAST(CAST(updated_at AS TIMESTAMP) AS DATE) AS updated_date
        FROM crm_customers_df
        """
    )
    con.execute(
        """
        CREATE VIEW customers AS
        SELECT *, updated_at AS valid_from,
            lead(updated_at) OVER (PARTITION BY customer_id ORDER BY updated_at) AS valid_to,
            lead(updated_at) OVER (PARTITION BY customer_id ORDER BY updated_at) IS NULL AS is_current
        FROM raw_customers
        """
    )
    con.execute(
        """
        CREATE VIEW delivered AS
        SELECT *, count(order_id) OVER (PARTITION BY folder_day, order_id) AS copies_of_id
        FROM (SELECT DISTINCT * FROM lake);
        CREATE VIEW valid_delivered AS
        SELECT * FROM delivered
        WHERE order_id IS NOT NULL AND customer_id IS NOT NULL AND order_ts IS NOT NULL
          AND coalesce(order_amount > 0, false) AND coalesce(CAST(order_ts AS DATE) = folder_day, false)
          AND copies_of_id = 1;
        CREATE VIEW orders AS
        SELECT order_id, customer_id, order_ts, order_amount, quantity, channel,
               folder_day AS order_date
        FROM valid_delivered;
        CREATE VIEW orders_rejects AS
        SELECT * EXCLUDE (copies_of_id) FROM delivered
        EXCEPT SELECT * EXCLUDE (copies_of_id) FROM valid_delivered;
        """
    )
    con.execute(
        """
        CREATE VIEW customer_orders AS
        SELECT o.*, c.name AS customer_name, c.customer_segment, c.country,
               c.valid_from AS customer_valid_from, c.valid_from IS NULL AS is_orphan
        FROM orders o ASOF LEFT JOIN customers c
          ON o.customer_id = c.customer_id AND o.order_ts >= c.valid_from
        """
    )
    con.execute(
        """
        CREATE VIEW daily_customer_metrics AS
        SELECT order_date AS metric_date, customer_id, customer_segment,
               sum(order_amount) AS total_spend, count(order_id) AS order_count,
               avg(order_amount) AS avg_order_value
        FROM customer_orders
        GROUP BY ALL
        """
    )
    return con


def table(con: duckdb.DuckDBPyConnection, name: str, where: str = "TRUE") -> pd.DataFrame:
    return con.execute(f"SELECT * FROM {name} WHERE {where}").df()


def normalise(frame: pd.DataFrame, keys: list[str], columns: list[str]) -> pd.DataFrame:
    """Same columns, same order of rows, comparable dtypes (timestamps in UTC, dates as dates)."""
    out = frame[columns].copy()
    for column in columns:
        series = out[column]
        if isinstance(series.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(series):
            series = pd.to_datetime(series, utc=True).dt.as_unit("us")
            out[column] = series
        if column.endswith("_date"):
            out[column] = pd.to_datetime(series).dt.date
    return out.sort_values(keys, na_position="first").reset_index(drop=True)
