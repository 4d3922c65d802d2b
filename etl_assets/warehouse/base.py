"""The warehouse interface every backend implements (delta now; snowflake and bigquery later)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import partial

import pyarrow as pa
import pyarrow.compute as pc
import ray.data

from etl_assets.contracts import TableContract
from etl_assets.ray_steps import map_blocks

# Splits one block into rows per output name. Names that are not target tables are counted only.
Router = Callable[[pa.Table], Mapping[str, pa.Table]]
# A value of a table's partition column: a day of a daily table, a batch id of a batch table.
PartitionValue = date | str


def changed_rows(block: pa.Table, changed: str) -> pa.Table:
    """The rows of ``block`` whose boolean column ``changed`` is true, without that column."""
    return block.filter(block.column(changed)).drop_columns([changed])


def partition_strings(values: Sequence[PartitionValue]) -> list[str]:
    """Partition values as the warehouse spells them: ISO dates, other values as they are."""
    return sorted({v.isoformat() if isinstance(v, date) else str(v) for v in values})


def require_partition_columns(targets: Sequence[TableContract]) -> None:
    """A partition replace needs every target to have a partition column."""
    for target in targets:
        if target.partition_column is None:
            raise ValueError(f"{target.name} has no partition column: a partition replace needs one")


def wanted_values(table: TableContract, column: str, values: Sequence[object]) -> pa.Array:
    """Values that select rows (``read``'s ``where_in``, ``replace_where``) as an array of the
    column's type: distinct, sorted, without nulls (no row's value equals a null), so every
    backend selects the same rows by them (a naive datetime, for one, is a UTC one on each)."""
    if column not in table.column_names:
        raise ValueError(f"{table.name} has no column {column!r} to select rows by")
    if column == table.partition_column:
        raise ValueError(f"{table.name}: {column!r} is its partition column: select its rows by partition")
    kind = table.schema.field(column).type
    given = values.cast(kind) if isinstance(values, pa.Array) else pa.array(list(values), kind)
    distinct = pc.unique(given).drop_null()
    return distinct.take(pc.array_sort_indices(distinct))


class OutsideReplacedValues(ValueError):
    """A row given to ``replace_where`` holds none of the values it replaces."""


def require_values_in(block: pa.Table, *, table: str, column: str, values: pa.Array) -> pa.Table:
    """``block`` as it is when each of its rows holds one of ``values`` in ``column``."""
    found = block.column(column)
    outside = pc.invert(pc.is_in(found, value_set=values.cast(found.type)))
    if pc.any(outside).as_py():
        first = block.filter(outside).column(column)[0].as_py()
        raise OutsideReplacedValues(
            f"{table}: a row with {column} = {first!r} is outside the {len(values)} values this write"
            " replaces; nothing was written"
        )
    return block


def replaced_values(
    target: TableContract, column: str, values: Sequence[object]
) -> tuple[pa.Array, Callable[[pa.Table], pa.Table]]:
    """``replace_where``'s values (see ``wanted_values``), and the check of a block against them."""
    # Through the key, a row of another value can never be the same row as one replaced: a
    # merge would move it, a rewrite would keep both.
    if column not in target.keys:
        raise ValueError(
            f"{target.name}: replace_where needs a column of the key {target.keys}, not {column!r}"
        )
    wanted = wanted_values(target, column, values)
    if not len(wanted):
        raise ValueError(f"{target.name}: replace_where needs at least one value of {column}")
    return wanted, partial(require_values_in, table=target.name, column=column, values=wanted)


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
    # Rows routed to outputs that are not tables (such as collapsed duplicates), counted.
    other_counts: Mapping[str, int]
    other_counts_per_partition: Mapping[str, Mapping[str, int]] = field(default_factory=dict)


class Warehouse(ABC):
    """A place to keep the platform's tables.

    Every write is atomic: it either lands whole in one commit or leaves the table as it was.
    Data arrives as a Ray Dataset and leaves Ray in blocks; no method collects a table on the driver.
    """

    @abstractmethod
    def replace_partitions(
        self,
        ds: ray.data.Dataset,
        targets: Sequence[TableContract],
        partitions: Sequence[PartitionValue],
        route: Router | None = None,
    ) -> ReplaceResult:
        """Replace exactly the rows of ``partitions`` (values of each target's partition column).

        With several targets, ``route`` splits each block among them; a partition with no rows ends
        empty. Rows outside ``partitions`` are refused.
        """

    def replace_window(
        self,
        ds: ray.data.Dataset,
        targets: Sequence[TableContract],
        days: Sequence[date],
        route: Router | None = None,
    ) -> ReplaceResult:
        """Replace the given days of daily tables (see ``replace_partitions``)."""
        return self.replace_partitions(ds, targets, days, route)

    @abstractmethod
    def merge(
        self,
        ds: ray.data.Dataset,
        target: TableContract,
        update_if: str | None = None,
        delete_unmatched_in: tuple[str, Sequence[object]] | None = None,
    ) -> WriteResult:
        """Upsert rows by ``target.keys``: update matched rows, insert the others.

        ``update_if`` names a column: a matched row is updated only when the incoming value is
        greater (for change data capture, so an old version never overwrites a newer one).
        ``delete_unmatched_in=(column, values)`` also deletes target rows with ``column`` in
        ``values`` that the source does not hold: the source is then the whole truth for them.
        """

    def rebuild(
        self,
        target: TableContract,
        build: Callable[[ray.data.Dataset | None], ray.data.Dataset],
        changed: str,
        columns: Sequence[str] | None = None,
    ) -> WriteResult:
        """Rewrite the table from its own rows. ``build`` receives the table's rows (``columns``
        of them; None while the table does not exist) and returns every row the table is to hold,
        each key once, with a boolean column ``changed``: a row with ``changed`` false must be
        one the table holds already, and every row the table holds must come back.
        ``rows_written`` counts the changed rows.

        By default the changed rows are upserted by the target's keys (``merge``): a SQL warehouse
        merges in the warehouse and receives only those. Delta rewrites the table instead (see
        ``DeltaWarehouse.rebuild``).
        """
        existing = self.read(target, columns=columns) if self.exists(target) else None
        return self.merge(map_blocks(build(existing), partial(changed_rows, changed=changed)), target)

    def replace_where(
        self, ds: ray.data.Dataset, target: TableContract, column: str, values: Sequence[object]
    ) -> WriteResult:
        """Make the table's rows whose ``column`` holds one of ``values`` exactly the rows of ``ds``,
        in one commit; rows with other values stay as they are. Every row of ``ds`` must hold
        one of the values (``OutsideReplacedValues`` otherwise, and the table is left as it was).

        By default a merge by the table's keys that also deletes the rows of those values the
        source does not hold, which a SQL warehouse runs in the warehouse. Delta's workers rewrite
        only the files whose recorded range of ``column`` holds one of the values (see
        ``DeltaWarehouse.replace_where``).
        """
        wanted, inside = replaced_values(target, column, values)
        return self.merge(map_blocks(ds, inside), target, delete_unmatched_in=(column, wanted.to_pylist()))

    @abstractmethod
    def overwrite(self, ds: ray.data.Dataset, target: TableContract) -> WriteResult:
        """Replace the whole table with the rows, in one commit."""

    @abstractmethod
    def append(self, ds: ray.data.Dataset, target: TableContract) -> WriteResult:
        """Add the rows as they are."""

    @abstractmethod
    def read(
        self,
        table: TableContract,
        partitions: Sequence[PartitionValue] | None = None,
        columns: Sequence[str] | None = None,
        where_in: tuple[str, Sequence[object]] | None = None,
    ) -> ray.data.Dataset:
        """The table (or the given partitions of it) as a Ray Dataset.

        ``where_in=(column, values)`` keeps only the rows whose ``column`` (not the partition
        column: that is ``partitions``' business) holds one of ``values``, and lets the backend
        skip data that holds none without reading it: Delta skips files by the minimum and
        maximum its log records for them, a SQL warehouse prunes by its own means."""

    @abstractmethod
    def scan(
        self,
        table: TableContract,
        partitions: Sequence[PartitionValue] | None = None,
        columns: Sequence[str] | None = None,
    ) -> Iterator[pa.RecordBatch]:
        """Stream the table's rows to the caller in bounded batches (for checks and tests)."""

    @abstractmethod
    def partitions(self, table: TableContract) -> list[str]:
        """The partition values the table holds rows for (empty when it does not exist)."""

    @abstractmethod
    def partition_row_counts(
        self, table: TableContract, partitions: Sequence[PartitionValue] | None = None
    ) -> dict[str, int]:
        """Rows per partition value (of ``partitions`` only, when given: a SQL warehouse then counts
        only those, not every day of a table of years), from the table's metadata where the
        backend keeps it. A partition without rows is left out."""

    @abstractmethod
    def row_count(self, table: TableContract) -> int:
        """Rows in the table now; 0 when it does not exist yet."""

    def window_row_count(self, table: TableContract, partitions: Sequence[PartitionValue] | None) -> int:
        """Rows of ``partitions`` of the table (of the whole table when None or when it has no
        partition column): how big a window's read will be before reading it. Counted as
        ``partition_row_counts`` and ``row_count`` count (from Delta's metadata; a ``COUNT`` over
        the window's days on SQL)."""
        if partitions is None or table.partition_column is None:
            return self.row_count(table)
        return sum(self.partition_row_counts(table, partitions).values())

    @abstractmethod
    def location(self, table: TableContract) -> str:
        """The table's URI or fully qualified name, for metadata and messages."""

    @abstractmethod
    def table_schema(self, table: TableContract) -> pa.Schema | None:
        """The schema the table has in the warehouse; None when it does not exist yet."""

    @abstractmethod
    def exists(self, table: TableContract) -> bool:
        """Whether the table has been created."""
