"""The CRM database (SQLite by default, PostgreSQL by URL) read into Ray with parameterized SQL."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import ray.data

from etl_assets.transforms.common import cents_text
from etl_assets.transforms.customers import SOURCE_COLUMNS as CUSTOMER_COLUMNS
from etl_assets.transforms.transactions import SOURCE_COLUMNS as TRANSACTION_COLUMNS


class SourceError(RuntimeError):
    """A source cannot be read as a whole: missing, unreachable, or not the expected shape."""


def redact(url: str) -> str:
    """The URL without its password, for messages and metadata."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def _sqlite_connect(path: str) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)


def _postgres_connect(url: str) -> Any:
    import psycopg

    return psycopg.connect(url, connect_timeout=10)


@dataclass(frozen=True)
class CrmDatabase:
    """Where the CRM lives, and how to reach it from the driver and from Ray tasks."""

    url: str

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite:")

    @property
    def placeholder(self) -> str:
        return "?" if self.is_sqlite else "%s"

    def connection_factory(self) -> Callable[[], Any]:
        if self.is_sqlite:
            path = self.url.removeprefix("sqlite:///").removeprefix("sqlite://")
            path = "/" + path.lstrip("/") if self.url.startswith("sqlite:////") else path
            return partial(_sqlite_connect, str(Path(path).resolve()))
        if self.url.startswith(("postgresql://", "postgres://")):
            return partial(_postgres_connect, self.url)
        raise SourceError(f"CRM database {redact(self.url)}: unsupported URL scheme")

    def sqlite_path(self) -> Path | None:
        if not self.is_sqlite:
            return None
        return Path(self.connection_factory().args[0])

    def check_table(self, table: str, columns: Sequence[str]) -> list[str]:
        """Fail with the URL and table named when the database or a column cannot be reached.

        Returns the table's columns the contract does not know: they are not read (schema drift
        that adds a column is a warning, not a failure)."""
        path = self.sqlite_path()
        if path is not None and not path.exists():
            raise SourceError(f"CRM database {redact(self.url)}: file {path} does not exist")
        try:
            conn = self.connection_factory()()
        except Exception as exc:
            raise SourceError(f"CRM database {redact(self.url)} is unreachable: {exc}") from exc
        try:
            cursor = conn.cursor()
            cursor.execute(f"SELECT * FROM {table} WHERE 1 = 0")
            present = {d[0] for d in cursor.description}
        except Exception as exc:
            raise SourceError(f"CRM database {redact(self.url)}: cannot read table {table}: {exc}") from exc
        finally:
            conn.close()
        missing = [c for c in columns if c not in present]
        if missing:
            raise SourceError(
                f"CRM database {redact(self.url)}: table {table} lacks column(s) {', '.join(missing)}"
            )
        return sorted(present - set(columns))

    def timestamp_param(self, value: datetime) -> Any:
        # SQLite keeps timestamps as fixed-width ISO text, which compares correctly as text.
        return value.strftime("%Y-%m-%d %H:%M:%S.%f") if self.is_sqlite else value


def read_customer_versions(
    crm: CrmDatabase, start: datetime, end: datetime, shards: int = 1
) -> ray.data.Dataset:
    """Customer versions with ``start <= updated_at < end`` (naive UTC datetimes).

    On PostgreSQL the read is split into ``shards`` parallel queries on ``customer_id``.
    """
    crm.check_table("customers", CUSTOMER_COLUMNS)
    p = crm.placeholder
    sql = f"SELECT {', '.join(CUSTOMER_COLUMNS)} FROM customers WHERE updated_at >= {p} AND updated_at < {p}"
    return _read(crm, sql, (crm.timestamp_param(start), crm.timestamp_param(end)), "customer_id", shards)


def _read(crm: CrmDatabase, sql: str, params: tuple, key: str, shards: int) -> ray.data.Dataset:
    """``ray.data.read_sql`` with bound parameters, sharded on an integer key where the database
    has ``MOD`` (PostgreSQL: ``MOD(ABS((key)), shards)``; SQLite is read by one task)."""
    return ray.data.read_sql(
        sql,
        crm.connection_factory(),
        sql_params=params or None,
        shard_keys=None if crm.is_sqlite else [key],
        # An empty hash function shards on the integer key itself.
        shard_hash_fn="",
        override_num_blocks=1 if crm.is_sqlite else max(1, shards),
    )


def read_transaction_changes(crm: CrmDatabase, since: datetime | None, shards: int) -> ray.data.Dataset:
    """Transactions with ``updated_at > since`` (all of them when ``since`` is None).

    On PostgreSQL the read is split into ``shards`` parallel queries on ``transaction_id``
    (``MOD(ABS(transaction_id), shards)``); SQLite, which lacks ``MOD``, is read by one task.
    """
    crm.check_table("transactions", TRANSACTION_COLUMNS)
    sql = f"SELECT {', '.join(TRANSACTION_COLUMNS)} FROM transactions"
    params: tuple = ()
    if since is not None:
        sql += f" WHERE updated_at > {crm.placeholder}"
        params = (crm.timestamp_param(since),)
    return _read(crm, sql, params, "transaction_id", shards)


def source_totals_by_status(crm: CrmDatabase) -> dict[str, tuple[int, str]]:
    """Count and sum of amount per status, computed by the database (for reconciliation)."""
    conn = crm.connection_factory()()
    try:
        cursor = conn.cursor()
        cursor.execute("SELECT status, COUNT(*), SUM(amount) FROM transactions GROUP BY status")
        return {status: (int(count), cents_text(total)) for status, count, total in cursor.fetchall()}
    finally:
        conn.close()
