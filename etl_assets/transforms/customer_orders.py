"""Point-in-time join of orders to the customer version valid when each order was placed."""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from etl_assets.contracts import CUSTOMER_ORDERS, conform

DIMENSION_COLUMNS = ["customer_id", "valid_from", "name", "customer_segment", "country"]


def prepare_dimension(customers: pa.Table) -> pd.DataFrame:
    """Customer versions sorted for ``merge_asof``: built once per worker, reused for every block."""
    dim = customers.select(DIMENSION_COLUMNS).to_pandas()
    dim = dim.rename(columns={"name": "customer_name"})
    dim["customer_valid_from"] = dim["valid_from"]
    return dim.sort_values("valid_from", kind="stable").reset_index(drop=True)


def join_point_in_time(orders: pa.Table, dimension: pd.DataFrame) -> pa.Table:
    """Each order with the latest customer version whose ``valid_from <= order_ts``.

    Orders without such a version stay, with null customer columns and ``is_orphan`` true.
    """
    if orders.num_rows == 0:
        return CUSTOMER_ORDERS.schema.empty_table()
    left = orders.to_pandas().reset_index(names="__pos").sort_values("order_ts", kind="stable")
    joined = pd.merge_asof(
        left,
        dimension,
        left_on="order_ts",
        right_on="valid_from",
        by="customer_id",
        direction="backward",
        allow_exact_matches=True,
    )
    joined = joined.sort_values("__pos", kind="stable")
    table = pa.Table.from_pandas(joined, preserve_index=False)
    table = table.append_column("is_orphan", pc.is_null(table.column("customer_valid_from")))
    return conform(table, CUSTOMER_ORDERS)
