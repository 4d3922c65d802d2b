"""The orders -> customer_orders -> daily_customer_metrics chain in DuckDB and in pandas.

Both peers do the platform's work on the same files: read the lake day and the `customers`
dimension (the Parquet files of its Delta table), collapse exact duplicates, reject invalid rows and
repeated order ids, join point-in-time, aggregate, and write `orders`, `orders_rejects`,
`customer_orders` and `daily_customer_metrics` as Parquet.
"""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import duckdb
import pandas as pd
from deltalake import DeltaTable


def customer_files(warehouse: Path) -> list[str]:
    return DeltaTable(str(warehouse / "customers")).file_uris()


def lake_files(sources: Path, day: date) -> list[str]:
    return sorted(str(p) for p in (sources / "lake" / "orders" / f"date={day.isoformat()}").glob("*.parquet"))


def run_duckdb(sources: Path, warehouse: Path, day: date, out: Path) -> int:
    """DuckDB on all cores, each table computed once and written as Parquet."""
    out.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    con.execute(f"CREATE VIEW customers AS SELECT * FROM read_parquet({customer_files(warehouse)})")
    day_start, day_end = (
        f"TIMESTAMPTZ '{d.isoformat()} 00:00:00+00'" for d in (day, day + timedelta(days=1))
    )
    con.execute(
        f"""
        CREATE TEMP TABLE delivered AS
        SELECT *,
            order_id IS NOT NULL AND customer_id IS NOT NULL AND order_ts IS NOT NULL
            AND coalesce(order_amount > 0, false)
            AND coalesce(order_ts >= {day_start} AND order_ts < {day_end}, false)
            AND count(order_id) OVER (PARTITION BY order_id) = 1 AS valid
        FROM (SELECT DISTINCT *, DATE '{day.isoformat()}' AS order_date
              FROM read_parquet({lake_files(sources, day)}));
        CREATE TEMP TABLE customer_orders AS
        SELECT o.* EXCLUDE (valid), c.name AS customer_name, c.customer_segment, c.country,
               c.valid_from AS customer_valid_from, c.valid_from IS NULL AS is_orphan
        FROM (SELECT * FROM delivered WHERE valid) o ASOF LEFT JOIN customers c
          ON o.customer_id = c.customer_id AND o.order_ts >= c.valid_from;
        """
    )
    for table, rows in (("orders", "valid"), ("orders_rejects", "NOT valid")):
        query = f"SELECT * EXCLUDE (valid) FROM delivered WHERE {rows}"
        con.execute(f"COPY ({query}) TO '{out / table}.parquet' (FORMAT parquet)")
    con.execute(f"COPY customer_orders TO '{out / 'customer_orders.parquet'}' (FORMAT parquet)")
    con.execute(
        f"""COPY (SELECT order_date AS metric_date, customer_id, customer_segment,
                         round(sum(order_amount), 2) AS total_spend, count(order_id) AS order_count,
                         round(sum(order_amount), 2) / count(order_id) AS avg_order_value
                  FROM customer_orders GROUP BY ALL)
            TO '{out / "daily_customer_metrics.parquet"}' (FORMAT parquet)"""
    )
    rows = con.execute("SELECT count(*) FROM delivered").fetchone()[0]
    con.close()
    return rows


def run_pandas(sources: Path, warehouse: Path, day: date, out: Path) -> int:
    """The same chain the way a team would write it in plain pandas."""
    out.mkdir(parents=True, exist_ok=True)
    start = pd.Timestamp(day, tz="UTC")
    lake = pd.concat([pd.read_parquet(f) for f in lake_files(sources, day)], ignore_index=True)
    rows_in = len(lake)
    lake["order_date"] = day
    lake = lake.drop_duplicates()
    repeated = lake.order_id.duplicated(keep=False) & lake.order_id.notna()
    valid = (
        lake.order_id.notna()
        & lake.customer_id.notna()
        & lake.order_ts.notna()
        & (lake.order_amount > 0)
        & (lake.order_ts >= start)
        & (lake.order_ts < start + pd.Timedelta(days=1))
        & ~repeated
    )
    lake[~valid].to_parquet(out / "orders_rejects.parquet")
    orders = lake[valid].astype({"order_id": "int64", "customer_id": "int64"})
    orders.to_parquet(out / "orders.parquet")

    dim = pd.concat([pd.read_parquet(f) for f in customer_files(warehouse)], ignore_index=True)
    dim = dim[["customer_id", "valid_from", "name", "customer_segment", "country"]]
    joined = pd.merge_asof(
        orders.sort_values("order_ts"),
        dim.sort_values("valid_from"),
        left_on="order_ts",
        right_on="valid_from",
        by="customer_id",
        direction="backward",
    )
    joined["is_orphan"] = joined["valid_from"].isna()
    joined.to_parquet(out / "customer_orders.parquet")
    metrics = (
        joined.groupby(["order_date", "customer_id", "customer_segment"], dropna=False)
        .agg(total_spend=("order_amount", "sum"), order_count=("order_id", "count"))
        .reset_index()
    )
    metrics["total_spend"] = metrics["total_spend"].round(2)
    metrics["avg_order_value"] = metrics["total_spend"] / metrics["order_count"]
    metrics.to_parquet(out / "daily_customer_metrics.parquet")
    return rows_in
