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

from etl_assets.transforms.customers import SOURCE_COLUMNS as CUSTOMER_COLUMNS


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

    def check_table(self, table: str, columns: Sequence[str]) -> None:
        """Fail with the URL and table named when the database or a column cannot be reached."""
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

    def timestamp_param(self, value: datetime) -> Any:
        # SQLite keeps timestamps as fixed-width ISO text, which compares correctly as text.
        return value.strftime("%Y-%m-%d %H:%M:%S") if self.is_sqlite else value


def read_customer_versions(crm: CrmDatabase, start: datetime, end: datetime) -> ray.data.Dataset:
    """Customer versions with ``start <= updated_at < end`` (naive UTC datetimes)."""
    crm.check_table("customers", CUSTOMER_COLUMNS)
    p = crm.placeholder
    sql = (
        f"SELECT {', '.join(CUSTOMER_COLUMNS)} FROM customers"
        f" WHERE updated_at >= {p} AND updated_at < {p} ORDER BY customer_id, updated_at"
    )
    return ray.data.read_sql(
        sql,
        crm.connection_factory(),
        sql_params=(crm.timestamp_param(start), crm.timestamp_param(end)),
    )
