"""Whole tables read straight from each warehouse with its own client, not the platform's reader."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
from deltalake import DeltaTable
from google.api_core.client_options import ClientOptions
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery

from etl_assets.resources import WarehouseResource


def _delta(uri: str) -> pa.Table:
    return DeltaTable(uri).to_pyarrow_table()


# The connector's type codes of VARIANT and ARRAY (fakesnow reports an ARRAY as VARIANT).
SEMI_STRUCTURED = {5, 10}


def _snowflake(resource: WarehouseResource, name: str) -> pa.Table:
    with resource.snowflake.get_connection() as conn:
        cursor = conn.cursor()
        cursor.execute(f"SELECT * FROM {name}")
        table = cursor.fetch_arrow_all(force_return_table=True)
        semi_structured = {d.name.lower() for d in cursor.description if d.type_code in SEMI_STRUCTURED}
    table = table.rename_columns([c.lower() for c in table.column_names])
    # ARRAY columns arrive as JSON text.
    for i, field in enumerate(table.schema):
        if field.name in semi_structured:
            texts = table.column(i).to_pylist()
            parsed = pa.array([None if v is None else json.loads(v) for v in texts], pa.list_(pa.string()))
            table = table.set_column(i, field.name, parsed)
    return table


def _bigquery(resource: WarehouseResource, name: str) -> pa.Table:
    client = bigquery.Client(
        project=resource.bigquery.project,
        client_options=ClientOptions(api_endpoint=resource.bigquery_endpoint),
        credentials=AnonymousCredentials(),
    )
    sql = f"SELECT * FROM `{resource.bigquery.project}.{resource.bigquery_dataset}.{name}`"
    return client.query(sql).result().to_arrow(create_bqstorage_client=False)


def read_arrow(warehouse: Path | WarehouseResource, name: str) -> pa.Table:
    if isinstance(warehouse, Path):
        return _delta(str(warehouse / name))
    if warehouse.kind == "snowflake":
        return _snowflake(warehouse, name)
    if warehouse.kind == "bigquery":
        return _bigquery(warehouse, name)
    return _delta(f"{warehouse.root.rstrip('/')}/{name}")


def read_frame(warehouse: Path | WarehouseResource, name: str) -> pd.DataFrame:
    """The table as pandas; list columns as tuples (sortable), decimals as they are."""
    frame = read_arrow(warehouse, name).to_pandas()
    for column in frame.columns:
        if frame[column].map(lambda v: hasattr(v, "__len__") and not isinstance(v, str)).any():
            frame[column] = frame[column].map(tuple)
    return frame
