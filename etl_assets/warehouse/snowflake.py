"""Snowflake backend, reached through ``dagster-snowflake``'s ``SnowflakeResource``.

Workers bulk-load each block as one Parquet file: ``PUT`` into a temporary stage of their own
session, then ``COPY INTO`` the write's staging table (``MATCH_BY_COLUMN_NAME``, ``PURGE``). The
driver's transaction then replaces partitions (``DELETE`` + ``INSERT``) or runs ``MERGE``.
Timestamps are ``TIMESTAMP_TZ`` (UTC), decimals ``NUMBER(p,s)``, lists ``ARRAY``.
"""

from __future__ import annotations

import json
import os
import tempfile
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import snowflake.connector

from etl_assets.contracts import TableContract
from etl_assets.warehouse.sql import SqlWarehouse

# Snowflake's names for what information_schema reports, so a stored column compares with the
# type the contract asks for.
# fakesnow reports an ARRAY column as VARIANT.
_SAME = {
    "VARCHAR": "TEXT",
    "STRING": "TEXT",
    "DOUBLE": "FLOAT",
    "TIMESTAMP_LTZ": "TIMESTAMP_TZ",
    "VARIANT": "ARRAY",
}


def snowflake_type(arrow_type: pa.DataType) -> str:
    if pa.types.is_integer(arrow_type):
        return "NUMBER(38,0)"
    if pa.types.is_floating(arrow_type):
        return "FLOAT"
    if pa.types.is_decimal(arrow_type):
        return f"NUMBER({arrow_type.precision},{arrow_type.scale})"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "TEXT"
    if pa.types.is_boolean(arrow_type):
        return "BOOLEAN"
    if pa.types.is_date(arrow_type):
        return "DATE"
    if pa.types.is_timestamp(arrow_type):
        return "TIMESTAMP_TZ" if arrow_type.tz else "TIMESTAMP_NTZ"
    if pa.types.is_list(arrow_type):
        return "ARRAY"
    raise TypeError(f"no Snowflake type for {arrow_type}")


# One connection per worker process and set of credentials, opened on first use.
_CONNECTIONS: dict[str, Any] = {}


def _key(args: Mapping[str, Any]) -> str:
    return json.dumps(args, sort_keys=True, default=str)


def _connection(args: Mapping[str, Any]) -> Any:
    key = _key(args)
    conn = _CONNECTIONS.get(key)
    if conn is None or conn.is_closed():
        conn = _CONNECTIONS[key] = snowflake.connector.connect(**args)
    return conn


def _forget(args: Mapping[str, Any]) -> None:
    conn = _CONNECTIONS.pop(_key(args), None)
    if conn is not None:
        conn.close()


def _as_json_text(rows: pa.Table) -> pa.Table:
    """List columns as JSON text (see ``SnowflakeWarehouse.stage_type``)."""
    for i, field in enumerate(rows.schema):
        if pa.types.is_list(field.type):
            text = [None if v is None else json.dumps(v) for v in rows.column(i).to_pylist()]
            rows = rows.set_column(i, field.name, pa.array(text, pa.string()))
    return rows


def _arrow(cursor: Any) -> pa.Table:
    return cursor.fetch_arrow_all(force_return_table=True)


class SnowflakeStageLoader:
    """Picklable: ``PUT`` one block as Parquet into this session's stage, ``COPY INTO`` the table."""

    def __init__(self, args: Mapping[str, Any]):
        self.args = dict(args)

    def __call__(self, table_name: str, rows: pa.Table) -> None:
        cursor = _connection(self.args).cursor()
        # A temporary stage lives as long as the session, which this worker keeps open; each
        # block gets a folder of its own in it, so a COPY loads exactly that block.
        cursor.execute("CREATE TEMPORARY STAGE IF NOT EXISTS ETL_LOAD")
        folder_in_stage = f"@ETL_LOAD/{uuid.uuid4().hex}"
        with tempfile.TemporaryDirectory(prefix="etl_snowflake_") as folder:
            path = os.path.join(folder, "block.parquet")
            pq.write_table(_as_json_text(rows), path)
            cursor.execute(f"PUT 'file://{path}' {folder_in_stage} AUTO_COMPRESS=FALSE OVERWRITE=TRUE")
            cursor.execute(
                f"COPY INTO {table_name} FROM {folder_in_stage}"
                " FILE_FORMAT = (TYPE = PARQUET USE_LOGICAL_TYPE = TRUE)"
                " MATCH_BY_COLUMN_NAME = CASE_INSENSITIVE PURGE = TRUE"
            )
        cursor.close()


class SnowflakeQueryRunner:
    """Picklable: one query's rows as Arrow, in a Ray read task."""

    def __init__(self, args: Mapping[str, Any]):
        self.args = dict(args)

    def __call__(self, sql: str) -> pa.Table:
        cursor = _connection(self.args).cursor()
        cursor.execute(sql)
        return _arrow(cursor)


class SnowflakeWarehouse(SqlWarehouse):
    """Tables in the connection's database and schema, one per contract, named as the contract."""

    def __init__(self, connect_args: Mapping[str, Any]):
        # Sessions in UTC, whatever the account's default: timestamps are stored and compared in UTC.
        self.args = {**connect_args, "timezone": "UTC"}
        self.database = str(self.args.get("database") or "").upper()
        self.schema = str(self.args.get("schema") or "PUBLIC").upper()

    @contextmanager
    def _cursor(self) -> Iterator[Any]:
        # The process's one session for these credentials (logins are slow), a cursor per call.
        cursor = _connection(self.args).cursor()
        try:
            yield cursor
        finally:
            cursor.close()

    def qualified(self, name: str) -> str:
        return f"{self.database}.{self.schema}.{name.upper()}" if self.database else name.upper()

    def location(self, table: TableContract) -> str:
        account = self.args.get("host") or self.args.get("account")
        return f"snowflake://{account}/{self.database}/{self.schema}/{table.name.upper()}"

    def sql_type(self, arrow_type: pa.DataType) -> str:
        return snowflake_type(arrow_type)

    def table_kind(self, staging: bool) -> str:
        # Staging tables need no Fail-safe history.
        return "TRANSIENT TABLE" if staging else "TABLE"

    def stage_type(self, arrow_type: pa.DataType) -> str:
        # Lists are staged as JSON text and parsed into ARRAY on insert: how COPY maps Parquet's
        # nested LIST layout onto ARRAY is not something to depend on.
        return "TEXT" if pa.types.is_list(arrow_type) else snowflake_type(arrow_type)

    def staged_column(self, name: str, arrow_type: pa.DataType) -> str:
        return f"PARSE_JSON({name}) AS {name}" if pa.types.is_list(arrow_type) else name

    def column_types(self, name: str) -> dict[str, str] | None:
        catalog = f"{self.database}.INFORMATION_SCHEMA" if self.database else "INFORMATION_SCHEMA"
        with self._cursor() as cursor:
            cursor.execute(
                "SELECT column_name, data_type, numeric_precision, numeric_scale"
                f" FROM {catalog}.COLUMNS WHERE table_schema = %s AND table_name = %s"
                " ORDER BY ordinal_position",
                (self.schema, name.upper()),
            )
            rows = cursor.fetchall()
        if not rows:
            return None
        found = {}
        for column, data_type, precision, scale in rows:
            kind = _SAME.get(data_type.upper(), data_type.upper())
            if kind == "NUMBER":
                kind = f"NUMBER({precision},{scale})"
            found[column.lower()] = kind
        return found

    def execute(self, sql: str) -> None:
        with self._cursor() as cursor:
            cursor.execute(sql)

    def run_in_transaction(self, statements: Sequence[str]) -> None:
        with self._cursor() as cursor:
            cursor.execute("BEGIN")
            try:
                for sql in statements:
                    cursor.execute(sql)
            except BaseException:
                try:
                    cursor.execute("ROLLBACK")
                except Exception:
                    # A session whose rollback failed may still hold the transaction: drop it, so
                    # no later statement joins it (Snowflake aborts it when the session closes).
                    _forget(self.args)
                raise
            cursor.execute("COMMIT")

    def query(self, sql: str) -> pa.Table:
        with self._cursor() as cursor:
            cursor.execute(sql)
            return _arrow(cursor)

    def stream(self, sql: str) -> Iterator[pa.Table]:
        with self._cursor() as cursor:
            cursor.execute(sql)
            yield from cursor.fetch_arrow_batches()

    def stage_loader(self) -> SnowflakeStageLoader:
        return SnowflakeStageLoader(self.args)

    def query_runner(self) -> SnowflakeQueryRunner:
        return SnowflakeQueryRunner(self.args)

    def typed_literal(self, quoted: str, sql_type: str) -> str:
        return f"{quoted}::{sql_type}"
