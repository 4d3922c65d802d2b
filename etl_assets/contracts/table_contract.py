"""A table's contract as the rest of the platform sees it, derived from its pandera model.

The pandera model is the single source of truth: column names, types, nullability, descriptions,
rules and the key. From it come the Arrow schema the writer enforces (``TableContract.schema``),
the rules validated in the load pass (``TableContract.rules``) and the Dagster column schema.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from functools import cached_property

import pandera.polars as pap
import polars as pl
import pyarrow as pa

UTC_TS = pa.timestamp("us", tz="UTC")


class ContractViolation(ValueError):
    """Rows a table's contract forbids reached its writer: the table is left as it was."""


class SchemaMismatch(ValueError):
    """Data does not have the contract's columns or types (not a row-level problem)."""


# Codes of the rules pandera applies to every column and key, named after what they ask for.
NOT_NULL = "not_null"
UNIQUE = "unique"

_ARROW_TYPES = {
    pl.Int8: pa.int8(),
    pl.Int16: pa.int16(),
    pl.Int32: pa.int32(),
    pl.Int64: pa.int64(),
    pl.Float32: pa.float32(),
    pl.Float64: pa.float64(),
    pl.Boolean: pa.bool_(),
    pl.String: pa.string(),
    pl.Date: pa.date32(),
}


def arrow_type(dtype: pl.DataType) -> pa.DataType:
    """The Arrow type a polars dtype is stored as (strings as ``string``, not ``large_string``)."""
    if isinstance(dtype, pl.Datetime):
        return pa.timestamp(dtype.time_unit, tz=dtype.time_zone)
    if isinstance(dtype, pl.Decimal):
        return pa.decimal128(dtype.precision, dtype.scale)
    if isinstance(dtype, pl.List):
        return pa.list_(arrow_type(dtype.inner))
    base = dtype.base_type() if isinstance(dtype, pl.DataType) else dtype
    if base not in _ARROW_TYPES:
        raise TypeError(f"no Arrow type for polars dtype {dtype}")
    return _ARROW_TYPES[base]


@dataclass(frozen=True)
class Rule:
    """One rule of a contract: a stable machine-readable ``code``, the column it is about (None for
    a rule on several columns), what it asks in words, and whether breaking it rejects the row
    (``error``) or is only counted and reported (``warn``)."""

    code: str
    column: str | None
    description: str
    severity: str = "error"

    @property
    def rejects(self) -> bool:
        return self.severity == "error"


@dataclass(frozen=True)
class Column:
    name: str
    type: pa.DataType
    description: str
    nullable: bool = True
    rules: tuple[Rule, ...] = ()


@dataclass(frozen=True)
class TableContract:
    """A table's columns, key, rules and the column its partitions are cut on."""

    name: str
    columns: tuple[Column, ...]
    keys: tuple[str, ...] = ()
    partition_column: str | None = None
    # Rejected rows / rows in above which the reject-rate check fails (tables fed from sources).
    max_reject_rate: float | None = None
    # The pandera schema the rules come from; None for a bare contract (types and nulls only).
    pandera: pap.DataFrameSchema | None = field(default=None, compare=False, repr=False)
    table_rules: tuple[Rule, ...] = ()

    @property
    def schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, c.type, nullable=c.nullable) for c in self.columns])

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def rules(self) -> tuple[Rule, ...]:
        """Every rule in the order rows are judged: column by column, then the table's rules."""
        return tuple(r for c in self.columns for r in c.rules) + self.table_rules

    @property
    def key_rule_code(self) -> str | None:
        return f"{'+'.join(self.keys)}.{UNIQUE}" if self.keys else None

    @cached_property
    def strict_pandera(self) -> pap.DataFrameSchema | None:
        """The pandera schema with every rule raising, so one lazy validation sees all failures;
        which of them reject a row is the rule's severity, decided by the caller."""
        if self.pandera is None:
            return None
        strict = copy.deepcopy(self.pandera)
        for column in strict.columns.values():
            for check in column.checks:
                check.raise_warning = False
        for check in strict.checks:
            check.raise_warning = False
        return strict

    @cached_property
    def keyless_pandera(self) -> pap.DataFrameSchema | None:
        """``strict_pandera`` without the key's uniqueness, which ``judge_rows`` finds by sorting:
        pandera hashes every row for it, several times slower on millions of distinct keys."""
        if self.strict_pandera is None:
            return None
        keyless = copy.deepcopy(self.strict_pandera)
        keyless.unique = None
        return keyless


def _check_code(column: str, check: pap.Check) -> str:
    return f"{column}.{check.name}"


def _describe(check: pap.Check) -> str:
    return check.error or check.name


def _severity(check: pap.Check) -> str:
    return "warn" if check.raise_warning else "error"


def contract_from_model(
    model: type[pap.DataFrameModel],
    *,
    partition_column: str | None = None,
    max_reject_rate: float | None = None,
) -> TableContract:
    """The contract of a pandera model: its ``Config.name`` is the table, ``Config.unique`` the key."""
    schema = model.to_schema()
    keys = tuple(schema.unique or ())
    columns = []
    for name, col in schema.columns.items():
        rules = []
        if not col.nullable:
            rules.append(Rule(f"{name}.{NOT_NULL}", name, f"{name} is not null"))
        rules += [Rule(_check_code(name, c), name, _describe(c), _severity(c)) for c in col.checks]
        if col.unique:
            rules.append(Rule(f"{name}.{UNIQUE}", name, f"{name} is unique"))
        columns.append(
            Column(name, arrow_type(col.dtype.type), col.description or "", col.nullable, tuple(rules))
        )
    unnamed = [c.name for c in schema.checks if "." not in c.name]
    if unnamed:
        raise TypeError(f"{schema.name}: name dataframe checks '<column>.<rule>', not {unnamed}")
    table_rules = [Rule(c.name, None, c.description or _describe(c), _severity(c)) for c in schema.checks]
    if keys:
        table_rules.append(Rule(f"{'+'.join(keys)}.{UNIQUE}", None, f"({', '.join(keys)}) is unique"))
    return TableContract(
        name=schema.name,
        columns=tuple(columns),
        keys=keys,
        partition_column=partition_column,
        max_reject_rate=max_reject_rate,
        pandera=schema,
        table_rules=tuple(table_rules),
    )


def rejects_contract(
    loaded: TableContract, name: str, partition_description: str, reason_columns: tuple[Column, ...]
) -> TableContract:
    """The contract of ``loaded``'s rejects table: its columns as delivered (any value, nullable),
    the partition column, and the columns saying why each row was rejected."""
    delivered = tuple(
        Column(c.name, c.type, f"{c.name} as delivered")
        for c in loaded.columns
        if c.name != loaded.partition_column
    )
    partition = Column(
        loaded.partition_column,
        loaded.schema.field(loaded.partition_column).type,
        partition_description,
        nullable=False,
    )
    columns = (*delivered, partition, *reason_columns)
    schema = pap.DataFrameSchema(
        {
            c.name: pap.Column(_polars_type(c.type), nullable=c.nullable, description=c.description)
            for c in columns
        },
        name=name,
    )
    return TableContract(
        name=name,
        columns=tuple(Column(c.name, c.type, c.description, c.nullable, _null_rules(c)) for c in columns),
        partition_column=loaded.partition_column,
        pandera=schema,
    )


def _polars_type(type_: pa.DataType) -> pl.DataType:
    return pl.from_arrow(pa.array([], type_)).dtype


def _null_rules(column: Column) -> tuple[Rule, ...]:
    if column.nullable:
        return ()
    return (Rule(f"{column.name}.{NOT_NULL}", column.name, f"{column.name} is not null"),)


def conform(table: pa.Table, contract: TableContract, *, nulls_allowed: bool = False) -> pa.Table:
    """Select and cast ``table`` to the contract's columns, naming the column that does not fit.

    With ``nulls_allowed`` a null in a required column is left for the row validation to judge
    (it rejects the row); otherwise it is an error naming the column.
    """
    missing = [c for c in contract.column_names if c not in table.column_names]
    if missing:
        raise SchemaMismatch(f"{contract.name}: missing column(s) {', '.join(missing)}")
    arrays = []
    for fld in contract.schema:
        column = table.column(fld.name)
        try:
            arrays.append(column.cast(fld.type) if column.type != fld.type else column)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise SchemaMismatch(
                f"{contract.name}.{fld.name}: cannot cast {column.type} to {fld.type}: {exc}"
            ) from exc
        if not fld.nullable and not nulls_allowed and arrays[-1].null_count:
            raise ContractViolation(
                f"{contract.name}.{fld.name}: {arrays[-1].null_count} null value(s) in a non-null column"
            )
    schema = contract.schema
    if nulls_allowed:
        schema = pa.schema([f.with_nullable(True) for f in schema])
    return pa.Table.from_arrays(arrays, schema=schema)
