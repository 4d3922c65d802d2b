"""The warehouse interface every backend implements (delta now; snowflake and bigquery later)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date

import pyarrow as pa
import ray.data

from etl_assets.transforms.tables import TableContract

# Splits one block into rows per output name. Names that are not target tables are counted only.
Router = Callable[[pa.Table], Mapping[str, pa.Table]]


@dataclass(frozen=True)
class WriteResult:
    """What one write did to one table."""

    table: str
    location: str
    rows_written: int
    table_row_count: int
    version: int | None = None
    rows_per_day: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class ReplaceResult:
    tables: Mapping[str, WriteResult]
    other_counts: Mapping[str, int]


class Warehouse(ABC):
    """A place to keep the platform's tables.

    Every write is atomic: it either lands whole in one commit or leaves the table as it was.
    Data arrives as a Ray Dataset and leaves Ray in blocks; no method collects a table on the driver.
    """

    @abstractmethod
    def replace_window(
        self,
        ds: ray.data.Dataset,
        targets: Sequence[TableContract],
        days: Sequence[date],
        route: Router | None = None,
    ) -> ReplaceResult:
        """Replace exactly the rows of ``days`` in each daily target with the dataset's rows.

        With several targets, ``route`` splits each block among them; a day with no rows ends empty.
        """

    @abstractmethod
    def merge(self, ds: ray.data.Dataset, target: TableContract) -> WriteResult:
        """Upsert rows by ``target.keys``: update matched rows, insert the others."""

    @abstractmethod
    def append(self, ds: ray.data.Dataset, target: TableContract) -> WriteResult:
        """Add the rows as they are."""

    @abstractmethod
    def read(
        self,
        table: TableContract,
        days: Sequence[date] | None = None,
        columns: Sequence[str] | None = None,
    ) -> ray.data.Dataset:
        """The table (or the given days of a daily table) as a Ray Dataset."""

    @abstractmethod
    def scan(
        self,
        table: TableContract,
        days: Sequence[date] | None = None,
        columns: Sequence[str] | None = None,
    ) -> Iterator[pa.RecordBatch]:
        """Stream the table's rows to the caller in bounded batches (for checks and tests)."""

    @abstractmethod
    def row_count(self, table: TableContract) -> int:
        """Rows in the table now; 0 when it does not exist yet."""

    @abstractmethod
    def location(self, table: TableContract) -> str:
        """The table's URI or fully qualified name, for metadata and messages."""

    @abstractmethod
    def exists(self, table: TableContract) -> bool:
        """Whether the table has been created."""
