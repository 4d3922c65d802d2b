"""What the SQL warehouses (Snowflake, BigQuery) share.

A write is two phases. Ray workers bulk-load their blocks (Parquet, never row-by-row INSERTs) into
a staging table made for this write, and return only a manifest of row counts. The driver then
makes the staged rows visible in **one transaction**: a partition replace deletes the partitions
and inserts the staged rows, a merge runs ``MERGE`` by key. A failure before or during that
transaction leaves every target as it was; the staging tables are dropped either way.

Reads are Ray tasks too: one query per partition value (or per bucket of an integer key for
unpartitioned tables), each fetched as Arrow inside its task, so no table crosses the driver.
"""

from __future__ import annotations

import json
import logging
import uuid
from abc import abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial

import pyarrow as pa
import ray.data

from etl_assets.contracts import TableContract
from etl_assets.contracts.drift import schema_drift
from etl_assets.contracts.validation import SchemaMismatch
from etl_assets.ray_steps import from_tables, map_blocks
from etl_assets.warehouse.base import (
    PartitionValue,
    ReplaceResult,
    Router,
    Warehouse,
    WriteResult,
    partition_strings,
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

log = logging.getLogger(__name__)

# Loads one Arrow table into the named staging table; built on the driver, run in Ray workers.
StageLoader = Callable[[str, pa.Table], None]
# Runs one query and returns its rows as Arrow; built on the driver, run in Ray workers.
QueryRunner = Callable[[str], pa.Table]

# The staging column naming the load a row came in (see ``stage_block``).
LOAD_ID = "etl_load_id"
# Rows per read task for unpartitioned tables, bucketed on an integer key.
ROWS_PER_READ_TASK = 500_000


def stage_block(
    block: pa.Table,
    *,
    targets: Mapping[str, TableContract],
    stages: Mapping[str, str],
    allowed: frozenset[str] | None,
    route: Router | None,
    loader: StageLoader,
) -> pa.Table:
    """Runs in a Ray task: load one block's rows into the staging tables, return row counts.

    Each load is tagged with a fresh id, returned in the manifest (``path``); the driver takes only
    the rows of the ids it received, so a task Ray retried after its load landed adds nothing.
    """
    routed = route_block(block, targets, allowed, route)
    rows = list(routed.counted)
    for name, (contract, table) in routed.tables.items():
        load_id = uuid.uuid4().hex
        loader(stages[name], table.append_column(LOAD_ID, pa.array([load_id] * table.num_rows, pa.string())))
        rows += [
            {
                "table": name,
                "path": load_id,
                "partition_column": contract.partition_column,
                "partition_value": value,
                "num_records": part.num_rows,
            }
            for value, part in partition_groups(table, contract.partition_column)
        ]
    return pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)


def quoted_text(value: object) -> str:
    """A value in single quotes for SQL. Partition values and load ids come from data (a landing
    folder's name, say), and Snowflake, BigQuery and their emulators disagree on backslash escapes,
    so a value holding a quote or a backslash is refused rather than escaped."""
    text = str(value)
    if "'" in text or "\\" in text:
        raise ValueError(f"partition value {text!r} holds a quote or a backslash: rename it")
    return f"'{text}'"


def conform_to(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """Rows as the warehouse returned them, in the contract's column names, order and types.

    Warehouses return upper-case names (Snowflake), narrower or wider numbers, nanosecond
    timestamps, and arrays as JSON text (Snowflake ARRAY); each is cast back here.
    """
    by_name = {name.lower(): table.column(i) for i, name in enumerate(table.column_names)}
    columns = []
    for field in schema:
        column = by_name[field.name]
        if pa.types.is_list(field.type) and pa.types.is_string(column.type):
            column = pa.array(
                [None if text is None else json.loads(text) for text in column.to_pylist()], field.type
            )
        elif column.type != field.type:
            column = column.cast(field.type)
        columns.append(column)
    return pa.Table.from_arrays(columns, schema=schema)


# The most values one SQL ``IN`` list holds (see ``SqlWarehouse._values_in``).
IN_LIST_MOST = 1000


def _run_read(batch: pa.Table, *, runner: QueryRunner, schema: pa.Schema) -> pa.Table:
    return pa.concat_tables([conform_to(runner(sql), schema) for sql in batch.column("sql").to_pylist()])


class SqlWarehouse(Warehouse):
    """The shared write and read protocol; a dialect supplies SQL spelling and its client."""

    # -- what a dialect supplies ---------------------------------------------------------------

    @abstractmethod
    def qualified(self, name: str) -> str:
        """The fully qualified name of a table, as SQL spells it."""

    @abstractmethod
    def sql_type(self, arrow_type: pa.DataType) -> str:
        """The column type the warehouse stores an Arrow type as."""

    def stage_type(self, arrow_type: pa.DataType) -> str:
        """The column type a staging table holds an Arrow type as (the stored type by default)."""
        return self.sql_type(arrow_type)

    def staged_column(self, name: str, arrow_type: pa.DataType) -> str:
        """How a staged column is read into its target (as it is, by default)."""
        return name

    def table_clauses(self, contract: TableContract, staging: bool) -> str:
        """What follows the column list of ``CREATE TABLE`` (partitioning, expiry)."""
        return ""

    def table_kind(self, staging: bool) -> str:
        return "TABLE"

    def prepare(self) -> None:
        """Anything the warehouse needs before its first table (a dataset)."""

    def create_table_sql(self, name: str, contract: TableContract, staging: bool) -> str:
        """``CREATE TABLE`` for the contract's columns; a staging table takes what blocks hold
        (the contract's NOT NULLs guard the target) and the load id."""
        if staging:
            columns = [f"{f.name} {self.stage_type(f.type)}" for f in contract.schema]
            columns.append(f"{LOAD_ID} {self.sql_type(pa.string())}")
        else:
            columns = [
                f"{f.name} {self.sql_type(f.type)}{'' if f.nullable else ' NOT NULL'}"
                for f in contract.schema
            ]
        return (
            f"CREATE {self.table_kind(staging)} IF NOT EXISTS {self.qualified(name)}"
            f" ({', '.join(columns)}){self.table_clauses(contract, staging)}"
        )

    @abstractmethod
    def column_types(self, name: str) -> dict[str, str] | None:
        """The table's columns (lower-case) and their SQL types; None when it does not exist."""

    @abstractmethod
    def execute(self, sql: str) -> None:
        """Run one statement outside any transaction."""

    @abstractmethod
    def run_in_transaction(self, statements: Sequence[str]) -> None:
        """Run the statements in one transaction: all of them take effect, or none."""

    def run_atomically(self, statements: Sequence[str]) -> None:
        """One statement is atomic by itself (and a MERGE may not run inside an explicit
        transaction on every engine); several share a transaction."""
        if len(statements) == 1:
            self.execute(statements[0])
        else:
            self.run_in_transaction(statements)

    @abstractmethod
    def query(self, sql: str) -> pa.Table:
        """A small result (counts, partition lists) on the driver."""

    @abstractmethod
    def stream(self, sql: str) -> Iterator[pa.Table]:
        """A result streamed to the driver in bounded batches."""

    @abstractmethod
    def stage_loader(self) -> StageLoader:
        """A picklable loader Ray workers use to bulk-load blocks into a staging table."""

    @abstractmethod
    def query_runner(self) -> QueryRunner:
        """A picklable query runner for Ray read tasks."""

    @abstractmethod
    def typed_literal(self, quoted: str, sql_type: str) -> str:
        """A quoted date or timestamp as a literal of that SQL type."""

    def literal(self, value: str, arrow_type: pa.DataType) -> str:
        """A partition value (as ``partition_strings`` spells it) as a SQL literal of the column type."""
        if pa.types.is_integer(arrow_type):
            return str(int(value))
        quoted = quoted_text(value)
        if pa.types.is_date(arrow_type) or pa.types.is_timestamp(arrow_type):
            return self.typed_literal(quoted, self.sql_type(arrow_type))
        return quoted

    def bucket_expression(self, column: str, buckets: int) -> str:
        """An expression in 0..buckets-1 computed from an integer column, for read sharding."""
        return f"MOD(ABS({column}), {buckets})"

    def same_type(self, found: str, wanted: str) -> bool:
        """Whether a stored column type is the type the contract asks for."""
        return _normalised(found) == _normalised(wanted)

    # -- metadata ------------------------------------------------------------------------------

    def location(self, table: TableContract) -> str:
        return self.qualified(table.name)

    def exists(self, table: TableContract) -> bool:
        return self.column_types(table.name) is not None

    def table_schema(self, table: TableContract) -> pa.Schema | None:
        found = self.column_types(table.name)
        if found is None:
            return None
        expected = {f.name: f for f in table.schema}
        fields = []
        for name, sql_type in found.items():
            field = expected.get(name)
            if field is not None and self.same_type(sql_type, self.sql_type(field.type)):
                fields.append(field)
            else:
                # A column the contract does not know, or stored as another type: reported as the
                # type it holds, so the schema check names both.
                fields.append(pa.field(name, _arrow_of(sql_type)))
        return pa.schema(fields)

    def _check_schema(self, table: TableContract) -> bool:
        """Whether the table exists; raises SchemaMismatch when it does but drifted."""
        found = self.table_schema(table)
        if found is None:
            return False
        drift = schema_drift(found, table.schema)
        if drift.breaking:
            raise SchemaMismatch(
                f"{self.location(table)} does not match its contract: {drift.describe()}"
                " (a table written before its contract changed: rebuild it, see the README)"
            )
        return True

    def partitions(self, table: TableContract) -> list[str]:
        return sorted(self.partition_row_counts(table))

    def _partitions_in(self, table: TableContract, values: Sequence[str]) -> str:
        """``<partition column> IN (...)`` of ``values`` (as ``partition_strings`` spells them)."""
        return self._values_in(table, table.partition_column, values)

    def _values_in(
        self, table: TableContract, column: str, values: Sequence[object], alias: str | None = None
    ) -> str:
        """``<column> IN (...)`` of ``values``, each a literal of the column's type; a long list as
        lists of at most ``IN_LIST_MOST`` joined by ``OR`` (Snowflake refuses a list of more than
        16,384: a backfill of two years touches 17,520 hours). ``alias``: the table's, if any."""
        kind = table.schema.field(column).type
        literals = [self.literal(v, kind) for v in partition_strings(list(values))]
        named = f"{alias}.{column}" if alias else column
        lists = [
            f"{named} IN ({', '.join(literals[i : i + IN_LIST_MOST])})"
            for i in range(0, len(literals), IN_LIST_MOST)
        ]
        return lists[0] if len(lists) == 1 else "(" + " OR ".join(lists) + ")"

    def partition_row_counts(
        self, table: TableContract, partitions: Sequence[PartitionValue] | None = None
    ) -> dict[str, int]:
        return self._partition_counts(table, partitions, None)

    def _partition_counts(
        self, table: TableContract, partitions: Sequence[PartitionValue] | None, where: str | None
    ) -> dict[str, int]:
        """Rows per partition value (of ``partitions``, when given) that satisfy ``where``."""
        column = table.partition_column
        if column is None or not self.exists(table) or partitions is not None and not partitions:
            return {}
        query = f"SELECT {column} AS value, COUNT(*) AS n FROM {self.qualified(table.name)}"
        conditions = [where] if where else []
        if partitions is not None:
            conditions.append(self._partitions_in(table, partition_strings(partitions)))
        if conditions:
            query += " WHERE " + " AND ".join(conditions)
        counts = self.query(f"{query} GROUP BY {column}")
        counts = conform_to(counts, pa.schema([("value", pa.string()), ("n", pa.int64())]))
        return dict(sorted(zip(counts.column("value").to_pylist(), counts.column("n").to_pylist())))

    def row_count(self, table: TableContract, where: str | None = None) -> int:
        if not self.exists(table):
            return 0
        query = f"SELECT COUNT(*) AS n FROM {self.qualified(table.name)}"
        counts = self.query(f"{query} WHERE {where}" if where else query)
        return int(counts.column(0)[0].as_py())

    # -- writes --------------------------------------------------------------------------------

    def replace_partitions(
        self,
        ds: ray.data.Dataset,
        targets: Sequence[TableContract],
        partitions: Sequence[PartitionValue],
        route: Router | None = None,
    ) -> ReplaceResult:
        require_partition_columns(targets)
        values = partition_strings(partitions)

        # Spelled (and so checked) before anything is written.
        windows = {t.name: self._partitions_in(t, values) for t in targets}

        def statements(target: TableContract, staged: str) -> list[str]:
            delete = f"DELETE FROM {self.qualified(target.name)} WHERE {windows[target.name]}"
            return ([delete] if values else []) + [self._insert_from(target, staged)]

        manifests = self._staged_write(ds, targets, frozenset(values), route, statements)
        results = {t.name: self._result(t, manifests.get(t.name, []), values) for t in targets}
        return replace_result(results, manifests)

    def append(self, ds: ray.data.Dataset, target: TableContract) -> WriteResult:
        manifests = self._staged_write(
            ds, [target], None, None, lambda t, staged: [self._insert_from(t, staged)]
        )
        return self._result(target, manifests.get(target.name, []), None)

    def overwrite(self, ds: ray.data.Dataset, target: TableContract) -> WriteResult:
        def statements(t: TableContract, staged: str) -> list[str]:
            # A DELETE of every row inside the transaction, not a table swap: readers see the old
            # rows or the new ones, and the table keeps its definition.
            return [f"DELETE FROM {self.qualified(t.name)} WHERE TRUE", self._insert_from(t, staged)]

        manifests = self._staged_write(ds, [target], None, None, statements)
        return self._result(target, manifests.get(target.name, []), None)

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

        def statements(t: TableContract, staged: str) -> list[str]:
            return [self._merge_sql(t, staged, update_if, delete_unmatched_in)]

        manifests = self._staged_write(ds, [target], None, None, statements)
        return self._result(target, manifests.get(target.name, []), None)

    def _merge_sql(
        self,
        target: TableContract,
        staged: str,
        update_if: str | None,
        delete_unmatched_in: tuple[str, Sequence[object]] | None,
    ) -> str:
        """One ``MERGE``, so it is atomic on its own.

        ``delete_unmatched_in`` needs target rows the source does not hold deleted; Snowflake's
        ``MERGE`` has no ``WHEN NOT MATCHED BY SOURCE``, so those rows join the source flagged
        ``etl_unmatched`` and a ``WHEN MATCHED`` clause deletes them.
        """
        name = self.qualified(target.name)
        cols = target.column_names
        listed = ", ".join(cols)
        source = f"SELECT {listed}, FALSE AS etl_unmatched FROM {staged} N"
        if delete_unmatched_in is not None:
            column, scope = delete_unmatched_in
            matches = " AND ".join(f"X.{k} = G.{k}" for k in target.keys)
            source += (
                f" UNION ALL SELECT {listed}, TRUE AS etl_unmatched FROM {name} G"
                f" WHERE {self._values_in(target, column, scope, 'G')}"
                f" AND NOT EXISTS (SELECT 1 FROM {staged} X WHERE {matches})"
            )
        on = " AND ".join(f"T.{k} = S.{k}" for k in target.keys)
        newer = f" AND S.{update_if} > T.{update_if}" if update_if else ""
        updates = ", ".join(f"{c} = S.{c}" for c in cols if c not in target.keys)
        sql = f"MERGE INTO {name} T USING ({source}) S ON {on}"
        if delete_unmatched_in is not None:
            sql += " WHEN MATCHED AND S.etl_unmatched THEN DELETE"
        if updates:  # a table of keys only has nothing to update
            sql += f" WHEN MATCHED AND NOT S.etl_unmatched{newer} THEN UPDATE SET {updates}"
        sql += (
            f" WHEN NOT MATCHED AND NOT S.etl_unmatched THEN INSERT ({listed})"
            f" VALUES ({', '.join(f'S.{c}' for c in cols)})"
        )
        return sql

    def _insert_from(self, target: TableContract, staged: str) -> str:
        cols = ", ".join(target.column_names)
        return f"INSERT INTO {self.qualified(target.name)} ({cols}) SELECT {cols} FROM {staged} N"

    def _staged_rows(self, target: TableContract, stage: str, load_ids: Sequence[str]) -> str:
        """The rows of the loads the manifest names, as a subquery in the target's columns."""
        columns = ", ".join(self.staged_column(f.name, f.type) for f in target.schema)
        listed = ", ".join(self.literal(i, pa.string()) for i in sorted(set(load_ids))) or "NULL"
        return f"(SELECT {columns} FROM {self.qualified(stage)} WHERE {LOAD_ID} IN ({listed}))"

    def _staged_write(
        self,
        ds: ray.data.Dataset,
        targets: Sequence[TableContract],
        allowed: frozenset[str] | None,
        route: Router | None,
        statements: Callable[[TableContract, str], list[str]],
    ) -> dict[str, list[dict]]:
        """Stage every target's rows from Ray, then apply ``statements`` in one transaction."""
        existing = {t.name: self._check_schema(t) for t in targets}
        self.prepare()
        stages = {t.name: f"{t.name}__stage_{uuid.uuid4().hex[:12]}" for t in targets}
        created: list[str] = []
        try:
            for target in targets:
                self.execute(self.create_table_sql(stages[target.name], target, staging=True))
                created.append(stages[target.name])
            writer = partial(
                stage_block,
                targets={t.name: t for t in targets},
                stages=stages,
                allowed=allowed,
                route=route,
                loader=self.stage_loader(),
            )
            manifest = map_blocks(ds, writer)
            manifests = collect_manifests(manifest.iter_batches(batch_format="pyarrow", batch_size=None))
            # Created only once everything is staged, so a run that fails while loading leaves nothing.
            for target in targets:
                if not existing[target.name]:
                    self.execute(self.create_table_sql(target.name, target, staging=False))
            work = []
            for target in targets:
                load_ids = [row["path"] for row in manifests.get(target.name, [])]
                work += statements(target, self._staged_rows(target, stages[target.name], load_ids))
            self.run_atomically(work)
        finally:
            for stage in created:
                try:
                    self.execute(f"DROP TABLE IF EXISTS {self.qualified(stage)}")
                except Exception as exc:  # the write's own outcome matters more than its litter
                    log.warning("could not drop staging table %s: %s", self.qualified(stage), exc)
        return manifests

    def _result(self, target: TableContract, rows: list[dict], partitions: list[str] | None) -> WriteResult:
        return WriteResult(
            table=target.name,
            location=self.location(target),
            rows_written=sum(r["num_records"] for r in rows),
            table_row_count=self.row_count(target),
            rows_per_day=rows_per_partition(rows, partitions),
        )

    # -- reads ---------------------------------------------------------------------------------

    def _select(self, table: TableContract, columns: Sequence[str], where: str | None) -> str:
        sql = f"SELECT {', '.join(columns)} FROM {self.qualified(table.name)}"
        return f"{sql} WHERE {where}" if where else sql

    def _shards(
        self, table: TableContract, partitions: Sequence[PartitionValue] | None, where: str | None = None
    ) -> list[str | None]:
        """WHERE clauses that split the table (or its given partitions) among read tasks: one per
        partition, and a partition (or an unpartitioned table) of more than ``ROWS_PER_READ_TASK``
        rows split further by a hash of an integer key, so no task holds a whole big day. With
        ``where``, only its rows are counted and read, and partitions without any get no task."""
        column = table.partition_column
        integer_keys = [
            k for k in table.keys if k != column and pa.types.is_integer(table.schema.field(k).type)
        ]

        def split(rows: int, shard: str | None) -> list[str | None]:
            shard = " AND ".join(c for c in (shard, where) if c) or None
            buckets = rows // ROWS_PER_READ_TASK + 1
            if not integer_keys or buckets == 1:
                return [shard]
            bucket = self.bucket_expression(integer_keys[0], buckets)
            return [f"{shard} AND {bucket} = {i}" if shard else f"{bucket} = {i}" for i in range(buckets)]

        if column is None:
            return split(self.row_count(table, where), None)
        kind = table.schema.field(column).type
        counts = self._partition_counts(table, partitions, where)
        values = partition_strings(partitions) if partitions is not None and where is None else sorted(counts)
        return [
            shard for v in values for shard in split(counts.get(v, 0), f"{column} = {self.literal(v, kind)}")
        ]

    def read(
        self,
        table: TableContract,
        partitions: Sequence[PartitionValue] | None = None,
        columns: Sequence[str] | None = None,
        where_in: tuple[str, Sequence[object]] | None = None,
    ) -> ray.data.Dataset:
        columns = list(columns or table.column_names)
        schema = pa.schema([table.schema.field(c) for c in columns])
        if not self.exists(table):
            raise FileNotFoundError(
                f"table {table.name} does not exist at {self.location(table)}: materialize it first"
            )
        condition = None
        if where_in is not None:
            column = where_in[0]
            values = wanted_values(table, *where_in).to_pylist()
            if not values:
                return from_tables(schema.empty_table())
            condition = self._values_in(table, column, values)
        shards = self._shards(table, partitions, condition)
        queries = [self._select(table, columns, where) for where in shards]
        if not queries:
            return from_tables(schema.empty_table())
        items = pa.table({"sql": queries})
        return map_blocks(
            from_tables([items.slice(i, 1) for i in range(items.num_rows)]),
            partial(_run_read, runner=self.query_runner(), schema=schema),
            batch_size=1,
        )

    def scan(
        self,
        table: TableContract,
        partitions: Sequence[PartitionValue] | None = None,
        columns: Sequence[str] | None = None,
    ) -> Iterator[pa.RecordBatch]:
        if not self.exists(table):
            return
        columns = list(columns or table.column_names)
        schema = pa.schema([table.schema.field(c) for c in columns])
        where = None
        if partitions is not None and table.partition_column:
            values = partition_strings(partitions)
            if not values:
                return
            where = self._partitions_in(table, values)
        for part in self.stream(self._select(table, columns, where)):
            if part.num_rows:
                yield from conform_to(part, schema).to_batches()


def _normalised(sql_type: str) -> str:
    return sql_type.upper().replace(" ", "")


# What a stored SQL type holds, for columns that do not match their contract.
_ARROW_OF = {
    "BOOL": pa.bool_(),
    "BOOLEAN": pa.bool_(),
    "DATE": pa.date32(),
    "FLOAT": pa.float64(),
    "FLOAT64": pa.float64(),
    "DOUBLE": pa.float64(),
    "INT64": pa.int64(),
    "STRING": pa.string(),
    "TEXT": pa.string(),
    "VARCHAR": pa.string(),
    "TIMESTAMP": pa.timestamp("us", "UTC"),
    "TIMESTAMP_TZ": pa.timestamp("us", "UTC"),
    "TIMESTAMP_NTZ": pa.timestamp("us"),
    "ARRAY": pa.list_(pa.string()),
}


def _arrow_of(sql_type: str) -> pa.DataType:
    base = _normalised(sql_type).split("(")[0].split("<")[0]
    if base in ("NUMBER", "NUMERIC", "DECIMAL"):
        inside = _normalised(sql_type)[len(base) :].strip("()")
        precision, _, scale = inside.partition(",")
        if not scale or scale == "0":
            return pa.int64()
        return pa.decimal128(int(precision), int(scale))
    return _ARROW_OF.get(base, pa.string())
