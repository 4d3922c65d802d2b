"""Delta Lake backend.

Window replaces and appends: Ray workers write Parquet files into the table's folder and return a
small manifest (path, size, row count); the driver commits every file of the run in one Delta
transaction (``create_write_transaction``, or ``create_table_with_add_actions`` for a table's
first). Until that commit the files are invisible, so a failed
run leaves the table at its previous version. A rebuild (the whole table from rows that hold it
all), a replace of the rows of some values (the workers also rewrite the files that hold them,
and the commit removes those) and a merge into a table that does not exist yet are written the
same way. Other merges stream blocks through the driver into ``DeltaTable.merge``, which also
commits once.

Each file records the least and greatest value of its integer, date and timestamp columns, and
reads by value open only the files whose range may hold one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from functools import partial
from urllib.parse import unquote

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import ray.data
from deltalake import CommitProperties, DeltaTable, Schema
from deltalake.exceptions import DeltaError
from deltalake.transaction import AddAction, RemoveAction, create_table_with_add_actions

from etl_assets import storage
from etl_assets.contracts import TableContract
from etl_assets.contracts.drift import schema_drift
from etl_assets.contracts.validation import SchemaMismatch, enforce, repeated
from etl_assets.ray_steps import from_tables, map_blocks, per_task_rows
from etl_assets.sizing import runs
from etl_assets.warehouse.base import (
    PartitionValue,
    ReplaceResult,
    Router,
    Warehouse,
    WriteResult,
    changed_rows,
    partition_strings,
    replaced_values,
    require_partition_columns,
    wanted_values,
)
from etl_assets.warehouse.blocks import (
    MANIFEST_SCHEMA,
    collect_manifests,
    partition_groups,
    replace_result,
    route_block,
    rows_per_partition,
)


def _file_stats(table: pa.Table) -> str:
    """A file's Delta statistics: its rows, nulls per column, and the least and greatest value of
    each integer, date and timestamp column (what reads skip files by: ``read(where_in=)``, and
    deltalake's own engine in a merge). Text and floating point columns get none: Delta truncates
    long text, and NaN has no place in an order."""
    bounds = {name: _bounds(table.column(name)) for name in table.column_names}
    bounds = {name: pair for name, pair in bounds.items() if pair is not None}
    return json.dumps(
        {
            "numRecords": table.num_rows,
            "minValues": {name: low for name, (low, _) in bounds.items()},
            "maxValues": {name: high for name, (_, high) in bounds.items()},
            "nullCount": {name: table.column(name).null_count for name in table.column_names},
        }
    )


def _bounds(column: pa.ChunkedArray) -> tuple[object, object] | None:
    """The least and greatest value of a column as Delta's statistics spell them, or None."""
    kind = column.type
    if column.null_count == len(column):
        return None
    if pa.types.is_integer(kind) or pa.types.is_date(kind):
        least, greatest = (v.as_py() for v in pc.min_max(column).values())
        return (least.isoformat(), greatest.isoformat()) if pa.types.is_date(kind) else (least, greatest)
    if pa.types.is_timestamp(kind) and kind.tz is not None:
        # Delta keeps milliseconds: the least is rounded down and the greatest up, so the bounds
        # still hold every value of the file.
        per_ms = {"s": None, "ms": 1, "us": 1_000, "ns": 1_000_000}[kind.unit]
        least, greatest = (v.as_py() for v in pc.min_max(column.cast(pa.int64())).values())
        if per_ms is None:
            least, greatest = least * 1000, greatest * 1000
        else:
            least, greatest = least // per_ms, -(-greatest // per_ms)
        least, greatest = _utc_ms(least), _utc_ms(greatest)
        return (least, greatest) if least and greatest else None
    return None


def _utc_ms(ms: int) -> str | None:
    """A UTC instant in milliseconds as Delta's statistics spell it; None past year 9999."""
    try:
        t = _EPOCH + timedelta(milliseconds=ms)
    except OverflowError:
        return None
    return f"{t.year:04d}-{t:%m-%dT%H:%M:%S}.{t.microsecond // 1000:03d}Z"


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def write_block_files(
    block: pa.Table,
    *,
    targets: Mapping[str, TableContract],
    uris: Mapping[str, str],
    allowed_days: frozenset[str] | None,
    route: Router | None,
    cluster: str | None = None,
) -> pa.Table:
    """Runs in a Ray task: write one block's rows as Parquet files, return their manifest rows.
    With ``cluster`` (a timestamp or date column), a file per UTC day of it, so a later write
    that replaces some of its values rewrites only their days' files.

    Files are named by a fresh uuid, so a retried task never overwrites a file another commit uses.
    """
    routed = route_block(block, targets, allowed_days, route)
    rows = list(routed.counted)
    for name, (contract, table) in routed.tables.items():
        rows += _write_table(table, contract, uris[name], cluster)
    return pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)


def _write_table(table: pa.Table, contract: TableContract, uri: str, cluster: str | None) -> list[dict]:
    """Rows of a table, as the contract types them, in a file per partition value (and per UTC
    day of ``cluster``); the files' manifest rows."""
    fs, root = pafs.FileSystem.from_uri(uri)
    column = contract.partition_column
    rows = []
    for day, rows_of_day in partition_groups(table, column):
        rows_of_day = rows_of_day.drop_columns([column]) if column else rows_of_day
        for data in _by_day(rows_of_day, cluster):
            rows.append(_write_file(data, fs, root, contract.name, column, day))
    return rows


def _by_day(table: pa.Table, column: str | None) -> list[pa.Table]:
    """The table's rows per UTC day of ``column`` (all of them at once without one)."""
    if column is None:
        return [table]
    values = table.column(column)
    if pa.types.is_timestamp(values.type):
        # A cast to date takes the day in the column's own time zone.
        values = values.cast(pa.timestamp(values.type.unit, "UTC"))
    days = values.cast(pa.date32())
    return [rows.drop_columns([DAY]) for _, rows in partition_groups(table.append_column(DAY, days), DAY)]


DAY = "__day"


def _write_file(
    data: pa.Table, fs: pafs.FileSystem, root: str, name: str, column: str | None, day: str | None
) -> dict:
    """One Parquet file of ``data`` in its partition's folder, and its manifest row."""
    relative = f"{column}={day}/" if column else ""
    relative += f"part-{uuid.uuid4().hex}.parquet"
    fs.create_dir(f"{root}/{relative.rsplit('/', 1)[0]}" if column else root, recursive=True)
    pq.write_table(data, f"{root}/{relative}", filesystem=fs, compression="snappy")
    return {
        "table": name,
        "path": relative,
        "partition_column": column,
        "partition_value": day,
        "size": fs.get_file_info(f"{root}/{relative}").size,
        "num_records": data.num_rows,
        "stats": _file_stats(data),
    }


# Manifest rows of the files a replace_where's rewrite removes from the table.
REMOVED = "__removed"


def rewrite_without(
    items: pa.Table, *, target: TableContract, uri: str, column: str, values: pa.Array, cluster: str | None
) -> pa.Table:
    """Runs in a Ray task: each listed file of the table rewritten without its rows whose
    ``column`` holds one of ``values`` (a file per UTC day of ``cluster``); a file that holds none
    is left as it is. The manifest rows of the files written, and a ``REMOVED`` row for each
    file they replace."""
    rows = []
    for item in items.to_pylist():
        listed = pa.table({"path": [f"{uri}/{item['path']}"], "partition_value": [item["partition_value"]]})
        table = _read_files(listed, target.schema, target.partition_column)
        hit = pc.is_in(table.column(column), value_set=values)
        removed = int(pc.sum(hit).as_py() or 0)
        if not removed:
            continue
        # Rows the table holds already: written back as they are, not judged again (a rule
        # tightened since is the contract checks' business, not a reason to fail this run).
        rows += _write_table(table.filter(pc.invert(hit)), target, uri, cluster)
        rows.append(
            {
                "table": REMOVED,
                "path": item["path"],
                "partition_column": target.partition_column,
                "partition_value": item["partition_value"],
                "size": item["size"],
                "num_records": removed,
            }
        )
    return pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)


# The counted output of a rebuild's router: the rows marked changed.
CHANGED_ROWS = "__changed_rows"


def split_changed(block: pa.Table, *, table: str, changed: str) -> dict[str, pa.Table]:
    """A rebuild's router: every row goes to the table, and the changed ones are counted."""
    return {table: block.drop_columns([changed]), CHANGED_ROWS: changed_rows(block, changed)}


class ConcurrentWrite(RuntimeError):
    """Another commit landed on a table while a write that must start from its version ran."""


class DeltaWarehouse(Warehouse):
    """Tables at ``<root>/<table name>``, partitioned by their date column where they are daily."""

    def __init__(self, root: str, storage_options: Mapping[str, str] | None = None):
        # A relative folder would mean another folder, or no valid location, in a Ray worker.
        self.root = (root if storage.is_uri(root) else os.path.abspath(root)).rstrip("/")
        self.storage_options = dict(storage_options or {})

    # -- locations and metadata -------------------------------------------------------------

    def location(self, table: TableContract) -> str:
        return f"{self.root}/{table.name}"

    def exists(self, table: TableContract) -> bool:
        return DeltaTable.is_deltatable(self.location(table), storage_options=self.storage_options)

    def _table(self, table: TableContract) -> DeltaTable:
        return DeltaTable(self.location(table), storage_options=self.storage_options)

    def _checked(self, table: TableContract) -> DeltaTable | None:
        """The existing table, its schema checked against the contract; None when it does not exist
        yet (it is created at commit, so a failed first write leaves nothing behind)."""
        if not self.exists(table):
            return None
        delta = self._table(table)
        self._check_schema(delta, table)
        return delta

    def _check_schema(self, delta: DeltaTable, table: TableContract) -> None:
        drift = schema_drift(pa.schema(delta.schema().to_arrow()), table.schema)
        if drift.breaking:
            raise SchemaMismatch(
                f"{self.location(table)} does not match its contract: {drift.describe()}"
                " (a table written before its contract changed: rebuild it, see the README)"
            )

    def table_schema(self, table: TableContract) -> pa.Schema | None:
        return pa.schema(self._table(table).schema().to_arrow()) if self.exists(table) else None

    def _add_actions(self, table: TableContract) -> pa.Table:
        return pa.table(self._table(table).get_add_actions(flatten=True))

    def partitions(self, table: TableContract) -> list[str]:
        if not self.exists(table) or table.partition_column is None:
            return []
        actions = self._add_actions(table)
        if actions.num_rows == 0:
            return []
        values = actions.column(f"partition.{table.partition_column}").cast(pa.string())
        return sorted(pc.unique(values).to_pylist())

    def partition_row_counts(
        self, table: TableContract, partitions: Sequence[PartitionValue] | None = None
    ) -> dict[str, int]:
        if not self.exists(table) or table.partition_column is None:
            return {}
        actions = self._add_actions(table)
        if actions.num_rows == 0:
            return {}
        # Every add action carries numRecords (the writer records it), so nothing is read.
        per_file = pa.table(
            {
                "value": actions.column(f"partition.{table.partition_column}").cast(pa.string()),
                "rows": actions.column("num_records"),
            }
        )
        counts = per_file.group_by(["value"]).aggregate([("rows", "sum")])
        found = dict(zip(counts.column("value").to_pylist(), counts.column("rows_sum").to_pylist()))
        if partitions is None:
            return found
        return {value: found[value] for value in partition_strings(partitions) if value in found}

    def row_count(self, table: TableContract) -> int:
        if not self.exists(table):
            return 0
        actions = self._add_actions(table)
        return int(pc.sum(actions.column("num_records")).as_py() or 0) if actions.num_rows else 0

    # -- writes -------------------------------------------------------------------------------

    def replace_partitions(
        self,
        ds: ray.data.Dataset,
        targets: Sequence[TableContract],
        partitions: Sequence[PartitionValue],
        route: Router | None = None,
    ) -> ReplaceResult:
        require_partition_columns(targets)
        values = partition_strings(partitions)
        # Schema-checked before any file is written.
        tables = {t.name: self._checked(t) for t in targets}
        manifests = self._write_files(ds, targets, frozenset(values), route)
        results = {}
        for target in targets:
            files = manifests.get(target.name, [])
            filters = [(target.partition_column, "in", values)]
            self._commit(tables[target.name], target, files, "overwrite", filters)
            results[target.name] = self._result(target, files, values)
        return replace_result(results, manifests)

    def append(self, ds: ray.data.Dataset, target: TableContract) -> WriteResult:
        return self._commit_all(ds, target, "append", self._checked(target))

    def overwrite(self, ds: ray.data.Dataset, target: TableContract) -> WriteResult:
        return self._commit_all(ds, target, "overwrite", self._checked(target))

    def _commit_all(
        self,
        ds: ray.data.Dataset,
        target: TableContract,
        mode: str,
        delta: DeltaTable | None,
        exclusive: bool = False,
        cluster: str | None = None,
    ) -> WriteResult:
        """Every file the workers write for ``target`` in one commit onto ``delta``, the table as
        the write found it (see ``_commit``)."""
        files = self._write_files(ds, [target], None, None, cluster).get(target.name, [])
        self._commit(delta, target, files, mode, exclusive=exclusive or mode == "overwrite")
        return self._result(target, files, None)

    def rebuild(
        self,
        target: TableContract,
        build: Callable[[ray.data.Dataset | None], ray.data.Dataset],
        changed: str,
        columns: Sequence[str] | None = None,
    ) -> WriteResult:
        """The table rewritten whole: the workers write every row ``build`` returns, the driver
        commits them in one overwrite. A ``merge`` would join the rows to the table in the driver
        (deltalake's DataFusion), which grows the driver with the data.

        ``build`` reads the version the table has now, and the overwrite commits onto that
        version or not at all (``ConcurrentWrite``): an overwrite removes only the files of the
        version it read, so it would keep another commit's rows beside their rebuilt copies."""
        delta = self._checked(target)
        existing = self._read_version(delta, target, None, columns) if delta is not None else None
        route = partial(split_changed, table=target.name, changed=changed)
        manifests = self._write_files(build(existing), [target], None, route)
        files = manifests.get(target.name, [])
        self._commit(delta, target, files, "overwrite", exclusive=True)
        written = sum(row["num_records"] for row in manifests.get(CHANGED_ROWS, []))
        return dataclasses.replace(self._result(target, files, None), rows_written=written)

    def _commit(
        self,
        delta: DeltaTable | None,
        target: TableContract,
        files: list[dict],
        mode: str,
        partition_filters: list[tuple[str, str, object]] | None = None,
        exclusive: bool = False,
        removed: Sequence[dict] = (),
    ) -> None:
        """One commit of ``files`` onto the version ``delta`` holds; for a table that did not
        exist (``delta`` None), its first commit holds them, so a failed write leaves no table.

        ``exclusive``: the commit lands on that version or not at all, raising ``ConcurrentWrite``
        (for writes whose rows replace everything the version held: an overwrite, a rebuild, a
        merge's first load; and a replace_where, which rewrites files of that version).
        Otherwise deltalake retries onto later commits, and a table another run created
        meanwhile is committed to as it now is (a window replace or an append).
        ``removed``: manifest rows of files of ``delta`` the commit removes (with mode append)."""
        actions = [_add_action(f) for f in files] + [_remove_action(f) for f in removed]
        partition_by = [target.partition_column] if target.partition_column else None
        once = CommitProperties(max_commit_retries=0)
        if delta is None:
            try:
                create_table_with_add_actions(
                    self.location(target),
                    Schema.from_arrow(target.schema),
                    actions,
                    mode="error",
                    partition_by=partition_by,
                    name=target.name,
                    storage_options=self.storage_options,
                    commit_properties=once,
                )
                return
            except DeltaError as exc:
                if not self.exists(target):
                    raise
                if exclusive:
                    raise self._concurrent(target, "no table") from exc
            delta = self._checked(target)
        try:
            delta.create_write_transaction(
                actions,
                mode=mode,
                schema=target.schema,
                partition_by=partition_by,
                partition_filters=partition_filters,
                commit_properties=once if exclusive else None,
            )
        except DeltaError as exc:
            # A conflict is a CommitFailedError, or a plain DeltaError when log cleanup has removed
            # the version this write started from: either way the table has moved on.
            if exclusive and self._table(target).version() != delta.version():
                raise self._concurrent(target, f"version {delta.version()}") from exc
            raise

    def _concurrent(self, target: TableContract, started: str) -> ConcurrentWrite:
        return ConcurrentWrite(
            f"{self.location(target)}: another commit landed while this run wrote the table (it"
            f" started from {started}, the table is now at version {self._table(target).version()});"
            " nothing was committed: run it again"
        )

    def merge(
        self,
        ds: ray.data.Dataset,
        target: TableContract,
        update_if: str | None = None,
        delete_unmatched_in: tuple[str, Sequence[object]] | None = None,
    ) -> WriteResult:
        if not target.keys:
            raise ValueError(f"{target.name} has no key to merge on")
        if delete_unmatched_in is not None and not delete_unmatched_in[1]:
            raise ValueError(f"{target.name}: delete_unmatched_in needs at least one value")
        delta = self._checked(target)
        if delta is None:
            # Into no table a merge inserts every row: the workers write them and the table's first
            # commit holds them, where DeltaTable.merge would take them all through the driver (a
            # first load or a backfill is a merge's largest). Exclusive: appended to a table
            # another run created meanwhile, the rows would sit beside the same keys.
            return self._commit_all(ds, target, "append", None, exclusive=True)
        stream = _Stream(ds, target)
        predicate = " AND ".join(f"t.{k} = s.{k}" for k in target.keys)
        merger = delta.merge(stream.reader(), predicate, source_alias="s", target_alias="t")
        merger = merger.when_matched_update_all(
            predicate=f"s.{update_if} > t.{update_if}" if update_if else None
        )
        merger = merger.when_not_matched_insert_all()
        if delete_unmatched_in is not None:
            column, values = delete_unmatched_in
            merger = merger.when_not_matched_by_source_delete(predicate=f"t.{_values_in(column, values)}")
        stream.run(merger.execute)
        return WriteResult(
            table=target.name,
            location=self.location(target),
            rows_written=stream.written,
            table_row_count=self.row_count(target),
            version=self._table(target).version(),
        )

    def replace_where(
        self, ds: ray.data.Dataset, target: TableContract, column: str, values: Sequence[object]
    ) -> WriteResult:
        """The workers write the rows given, and rewrite each file whose recorded range of
        ``column`` may hold one of the values without the rows of those values (a file that holds
        none stays); the driver commits the new files and removes the rewritten ones in one
        commit. Files are written one per UTC day of ``column`` (a timestamp or date), so a write
        of a few hours rewrites a day or two of the table, where a merge would scan all of it
        in the driver. The commit lands on the version the rewrite read, or not at all
        (``ConcurrentWrite``)."""
        wanted, inside = replaced_values(target, column, values)
        delta = self._checked(target)
        kind = wanted.type
        by_day = column if pa.types.is_timestamp(kind) or pa.types.is_date(kind) else None
        new = self._write_files(map_blocks(ds, inside), [target], None, None, by_day).get(target.name, [])
        rewritten = self._rewrite_without(delta, target, column, wanted, by_day) if delta is not None else {}
        files = new + rewritten.get(target.name, [])
        self._commit(delta, target, files, "append", exclusive=True, removed=rewritten.get(REMOVED, []))
        return self._result(target, new, None)

    def _rewrite_without(
        self, delta: DeltaTable, target: TableContract, column: str, wanted: pa.Array, cluster: str | None
    ) -> dict[str, list[dict]]:
        """Every file of ``delta`` that may hold one of ``wanted`` in ``column``, rewritten by the
        workers without those rows (``rewrite_without``); their manifests."""
        actions = _files_of(delta)
        if actions.num_rows:
            actions = actions.filter(_may_hold(actions, pa.table({column: wanted})))
        if actions.num_rows == 0:
            return {}
        part = target.partition_column
        items = pa.table(
            {
                "path": actions.column("path"),
                "partition_value": actions.column(f"partition.{part}").cast(pa.string())
                if part
                else pa.nulls(actions.num_rows, pa.string()),
                "size": actions.column("size_bytes"),
            }
        )
        counts = [c or 0 for c in actions.column("num_records").to_pylist()]
        groups = [items.take(list(run)) for run in runs(counts, per_task_rows(sum(counts), READ_ROWS))]
        rewrite = partial(
            rewrite_without,
            target=target,
            uri=self.location(target),
            column=column,
            values=wanted,
            cluster=cluster,
        )
        manifest = map_blocks(from_tables(groups), rewrite)
        return collect_manifests(manifest.iter_batches(batch_format="pyarrow", batch_size=None))

    def _write_files(
        self,
        ds: ray.data.Dataset,
        targets: Sequence[TableContract],
        allowed_days: frozenset[str] | None,
        route: Router | None,
        cluster: str | None = None,
    ) -> dict[str, list[dict]]:
        writer = partial(
            write_block_files,
            targets={t.name: t for t in targets},
            uris={t.name: self.location(t) for t in targets},
            allowed_days=allowed_days,
            route=route,
            cluster=cluster,
        )
        # Only the manifest (a row per file) reaches the driver.
        manifest = map_blocks(ds, writer)
        return collect_manifests(manifest.iter_batches(batch_format="pyarrow", batch_size=None))

    def _result(self, target: TableContract, files: list[dict], days: list[str] | None) -> WriteResult:
        return WriteResult(
            table=target.name,
            location=self.location(target),
            rows_written=sum(f["num_records"] for f in files),
            table_row_count=self.row_count(target),
            version=self._table(target).version(),
            rows_per_day=rows_per_partition(files, days),
        )

    # -- reads --------------------------------------------------------------------------------

    def read(
        self,
        table: TableContract,
        partitions: Sequence[PartitionValue] | None = None,
        columns: Sequence[str] | None = None,
        where_in: tuple[str, Sequence[object]] | None = None,
    ) -> ray.data.Dataset:
        if not self.exists(table):
            raise FileNotFoundError(
                f"table {table.name} does not exist at {self.location(table)}: materialize it first"
            )
        return self._read_version(self._table(table), table, partitions, columns, where_in)

    def _read_version(
        self,
        delta: DeltaTable,
        table: TableContract,
        partitions: Sequence[PartitionValue] | None,
        columns: Sequence[str] | None,
        where_in: tuple[str, Sequence[object]] | None = None,
    ) -> ray.data.Dataset:
        """``read`` of the version ``delta`` holds."""
        columns = list(columns or table.column_names)
        schema = pa.schema([table.schema.field(c) for c in columns])
        actions, keep = self._chosen_files(delta, table, partitions, where_in)
        column = table.partition_column
        if actions.num_rows == 0:
            return from_tables(schema.empty_table())
        # One Ray task per group of files of about READ_ROWS rows, each read whole with pyarrow:
        # several times faster than Ray's Parquet datasource on a few large files, and the
        # partition value comes from the Delta log instead of being parsed from paths.
        paths = [f"{self.location(table)}/{p}" for p in actions.column("path").to_pylist()]
        values = (
            actions.column(f"partition.{column}").cast(pa.string()).to_pylist()
            if column
            else [None] * len(paths)
        )
        counts = [c or 0 for c in actions.column("num_records").to_pylist()]
        # Groups of about READ_ROWS rows, but at least one per CPU when there are files enough.
        target = per_task_rows(sum(counts), READ_ROWS)
        groups = [
            pa.table(
                {"path": [paths[i] for i in run], "partition_value": [values[i] for i in run]}, READ_ITEMS
            )
            for run in runs(counts, target)
        ]
        return map_blocks(
            from_tables(groups),
            partial(
                _read_files,
                schema=schema,
                partition_column=column if column in columns else None,
                keep=keep,
            ),
        )

    def _chosen_files(
        self,
        delta: DeltaTable,
        table: TableContract,
        partitions: Sequence[PartitionValue] | None,
        where_in: tuple[str, Sequence[object]] | None,
    ) -> tuple[pa.Table, pa.Table | None]:
        """The add actions of the files that may hold rows of ``partitions`` and ``where_in`` (by
        the Delta log's partition values and file bounds), and ``where_in``'s values as the table
        the rows are then kept by (``None``: every row)."""
        actions = _files_of(delta)
        column = table.partition_column
        if column and partitions is not None and actions.num_rows:
            wanted = pa.array(partition_strings(partitions), pa.string())
            partition = actions.column(f"partition.{column}").cast(pa.string())
            actions = actions.filter(pc.is_in(partition, value_set=wanted))
        keep = None
        if where_in is not None:
            keep = pa.table({where_in[0]: wanted_values(table, *where_in)})
            actions = actions.filter(_may_hold(actions, keep))
        return actions, keep

    def scan(
        self,
        table: TableContract,
        partitions: Sequence[PartitionValue] | None = None,
        columns: Sequence[str] | None = None,
    ) -> Iterator[pa.RecordBatch]:
        if not self.exists(table):
            return iter(())
        # The files straight from the Delta log, each with its partition value as an expression
        # Arrow fills the column from: deltalake's own pyarrow dataset costs 30-40 ms to build
        # before it reads a row, most of a small window's read (a 30-day window of 30-60 small
        # files read 2-3 times faster this way, measured in benchmarks/README.md).
        column = table.partition_column
        actions, _ = self._chosen_files(self._table(table), table, partitions, None)
        if actions.num_rows == 0:
            return iter(())
        fs, root = storage.filesystem(self.location(table))
        paths = [f"{root}/{path}" for path in actions.column("path").to_pylist()]
        expressions = None
        if column:
            kind = table.schema.field(column).type
            values = actions.column(f"partition.{column}").cast(pa.string()).cast(kind).to_pylist()
            expressions = [pads.field(column) == pa.scalar(value, kind) for value in values]
        dataset = pads.FileSystemDataset.from_paths(
            paths, schema=table.schema, format=pads.ParquetFileFormat(), filesystem=fs, partitions=expressions
        )
        return _naming(
            table, self.location(table), dataset.to_batches(columns=list(columns or table.column_names))
        )


class _Stream:
    """A Dataset's blocks as the driver streams them into a deltalake writer: each enforced
    against the contract, counted."""

    def __init__(self, ds: ray.data.Dataset, target: TableContract):
        self.ds, self.target = ds, target
        self.written = 0
        self.refused: list[ValueError] = []

    def _batches(self) -> Iterator[pa.RecordBatch]:
        for block in self.ds.iter_batches(batch_format="pyarrow", batch_size=None):
            try:
                block = enforce(block, self.target)
            except ValueError as exc:
                # deltalake reads this generator from Rust and reports its errors as an opaque
                # DeltaError; keep ours to raise it as itself.
                self.refused.append(exc)
                raise
            self.written += block.num_rows
            yield from block.to_batches()

    def reader(self) -> pa.RecordBatchReader:
        return pa.RecordBatchReader.from_batches(self.target.schema, self._batches())

    def run(self, write: Callable[[], object]) -> None:
        """Run the deltalake write that reads the stream, raising a refused block's error as itself."""
        try:
            write()
        except Exception:
            if self.refused:
                raise self.refused[0] from None
            raise


def _values_in(column: str, values: Sequence[object]) -> str:
    """``<column> IN (...)`` for a deltalake predicate."""
    return f"{column} IN ({', '.join(_sql_literal(v) for v in values)})"


def _sql_literal(value: object) -> str:
    """A literal for a merge predicate; values come from the data, never from users."""
    if isinstance(value, datetime):
        text = value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    elif isinstance(value, date):
        text = value.isoformat()
    elif isinstance(value, int | float):
        return repr(value)
    else:
        text = str(value)
    return "'" + text.replace("'", "''") + "'"


# A read task takes files until it holds about this many rows.
READ_ROWS = 1_000_000
READ_ITEMS = pa.schema([("path", pa.string()), ("partition_value", pa.string())])


def _may_hold(actions: pa.Table, keep: pa.Table) -> pa.Array:
    """Which files may hold a row whose value is in ``keep``: those whose recorded least and
    greatest values surround one of them, and every file without those statistics."""
    column = keep.column_names[0]
    wanted = keep.column(column)
    kind = wanted.type
    # Only the bounds this module writes are compared (deltalake's writer also records text,
    # in an order a cast would not keep); any other column's files are all read.
    ordered = pa.types.is_integer(kind) or pa.types.is_date(kind) or pa.types.is_timestamp(kind)
    if not ordered or f"min.{column}" not in actions.column_names or not len(wanted):
        return pa.array([len(wanted) > 0] * actions.num_rows, pa.bool_())
    least = actions.column(f"min.{column}").cast(kind)
    greatest = actions.column(f"max.{column}").cast(kind)
    known = pc.and_(pc.is_valid(least), pc.is_valid(greatest)).to_numpy(zero_copy_only=False)
    as_int = pa.int32() if pa.types.is_date32(kind) else pa.int64()
    values = wanted.cast(as_int).to_numpy()
    low = least.fill_null(wanted[0]).cast(as_int).to_numpy()
    high = greatest.fill_null(wanted[0]).cast(as_int).to_numpy()
    if pa.types.is_timestamp(kind):
        # deltalake's own writer rounds the greatest down to the millisecond.
        high = high + {"s": 1, "ms": 1, "us": 1_000, "ns": 1_000_000}[kind.unit]
    first_at_or_above = np.searchsorted(values, low, side="left")
    inside = values[np.minimum(first_at_or_above, len(values) - 1)] <= high
    return pa.array(~known | ((first_at_or_above < len(values)) & inside))


def _files_of(delta: DeltaTable) -> pa.Table:
    """The add actions of ``delta``'s files, each ``path`` as the file was added: relative to the
    table and as it lies in storage. The log holds each path URI-encoded (a hive folder
    ``day=a%20b`` is ``day=a%2520b`` there), and deltalake encodes an action's path once more on
    commit, so a read and a ``RemoveAction`` both want it decoded."""
    actions = pa.table(delta.get_add_actions(flatten=True))
    paths = [unquote(path) for path in actions.column("path").to_pylist()]
    return actions.set_column(actions.schema.get_field_index("path"), "path", pa.array(paths, pa.string()))


def _naming(
    table: TableContract, location: str, batches: Iterator[pa.RecordBatch]
) -> Iterator[pa.RecordBatch]:
    """``batches``, where a file that is missing or does not fit the table's contract fails with an
    error naming the table and where it is (Arrow's own names neither)."""
    try:
        yield from batches
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, OSError) as exc:
        raise SchemaMismatch(
            f"table {table.name} at {location} cannot be read as its contract says: {exc}"
        ) from exc


def _read_files(
    items: pa.Table, schema: pa.Schema, partition_column: str | None, keep: pa.Table | None = None
) -> pa.Table:
    """Runs in a Ray task: the listed files of a table, with their partition value, as ``schema``;
    with ``keep``, only the rows whose value in its column is one of its values."""
    stored = [f.name for f in schema if f.name != partition_column]
    by = keep.column_names[0] if keep is not None else None
    tables = []
    for path, value in zip(items.column("path").to_pylist(), items.column("partition_value").to_pylist()):
        fs, on_fs = storage.filesystem(path)
        table = pq.read_table(
            on_fs, columns=stored + ([by] if by and by not in stored else []), filesystem=fs
        )
        if keep is not None:
            table = table.filter(
                pc.is_in(table.column(by), value_set=keep.column(by).cast(table.column(by).type))
            )
        if partition_column is not None:
            kind = schema.field(partition_column).type
            table = table.append_column(
                partition_column, repeated(value, table.num_rows, pa.string()).cast(kind)
            )
        tables.append(
            pa.Table.from_arrays([table.column(f.name).cast(f.type) for f in schema], schema=schema)
        )
    return pa.concat_tables(tables)


def _remove_action(f: dict) -> RemoveAction:
    return RemoveAction(
        path=f["path"],
        data_change=True,
        deletion_timestamp=int(time.time() * 1000),
        size=f["size"],
        partition_values={f["partition_column"]: f["partition_value"]} if f["partition_column"] else None,
    )


def _add_action(f: dict) -> AddAction:
    return AddAction(
        path=f["path"],
        size=f["size"],
        partition_values={f["partition_column"]: f["partition_value"]} if f["partition_column"] else {},
        modification_time=int(time.time() * 1000),
        data_change=True,
        stats=f["stats"],
    )
