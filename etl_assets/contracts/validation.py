"""Rows judged against their table's contract, batch by batch, inside the Ray task that loads them.

pandera (polars backend) evaluates every rule of the contract in one lazy validation; its failure
cases name the row, the column and the check, and are turned here into the contract's rule codes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandera.errors as pandera_errors
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from etl_assets.contracts.table_contract import (
    NOT_NULL,
    UNIQUE,
    ContractViolation,
    SchemaMismatch,
    TableContract,
    conform,
)

CODES = pa.list_(pa.string())


def empty_lists(n: int, type_: pa.DataType = CODES) -> pa.ListArray:
    """``n`` empty lists, built from their offsets (a Python list of ``n`` lists is far slower)."""
    return pa.ListArray.from_arrays(pa.array(np.zeros(n + 1, np.int32)), pa.array([], type_.value_type))


def spread_lists(lists: pa.ListArray, keep: np.ndarray) -> pa.ListArray:
    """``lists`` placed at the true positions of ``keep``, empty lists elsewhere: new offsets over
    the same values, with no per-row work."""
    lengths = np.zeros(len(keep), np.int32)
    lengths[keep] = pc.list_value_length(lists).to_numpy(zero_copy_only=False)
    offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int32)])
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), lists.flatten())


def repeated(value: object, n: int, type_: pa.DataType) -> pa.Array:
    """``value`` ``n`` times, without building a Python list of ``n`` items."""
    return pa.repeat(pa.scalar(value, type_), n)


@dataclass(frozen=True)
class RowVerdicts:
    """Per row of a batch: the codes of the rejecting rules it broke and of the soft rules it broke."""

    rejecting: pa.ListArray
    soft: pa.ListArray

    @property
    def first_reason(self) -> pa.Array:
        """The first rejecting rule's code; null for a row that is not rejected."""
        return first_code(self.rejecting)


def first_code(codes: pa.ListArray) -> pa.Array:
    lengths = pc.list_value_length(codes).to_numpy(zero_copy_only=False)
    firsts = np.asarray(codes.offsets)[:-1][lengths > 0]
    values = codes.values.take(pa.array(firsts)) if len(firsts) else pa.array([], pa.string())
    index = np.full(len(codes), -1)
    index[lengths > 0] = np.arange(len(firsts))
    return values.take(pa.array(index, mask=lengths == 0))


def _failure_code(contract: TableContract, row: Mapping) -> str | None:
    """The rule code of one kind of pandera failure case; None when it is not about rows."""
    schema = contract.strict_pandera
    column, check, number = row["column"], row["check"], row["check_number"]
    if row["schema_context"] == "Column":
        if check == "not_nullable":
            return f"{column}.{NOT_NULL}"
        if check == "field_uniqueness":
            return f"{column}.{UNIQUE}"
        if number is not None and column in schema.columns:
            return f"{column}.{schema.columns[column].checks[number].name}"
        return None
    if check == "multiple_fields_uniqueness":
        return contract.key_rule_code
    if number is not None and number < len(schema.checks):
        return schema.checks[number].name
    return None


def repeated_keys(frame: pl.DataFrame, keys: Sequence[str]) -> np.ndarray:
    """Boolean mask of the rows whose ``keys`` value another row also has (nulls equal nulls, as
    pandera's uniqueness check counts them). One key column is sorted rather than hashed: faster on
    millions of distinct values, and repeated values are rare. A column holding one value
    throughout (the partition of a one-day batch) is left out: it separates nothing."""
    if len(keys) > 1:
        varying = [k for k in keys if not _constant(frame.get_column(k))]
        keys = varying or list(keys[-1:])
    if len(keys) > 1:
        return frame.select(keys).is_duplicated().to_numpy()
    column = frame.get_column(keys[0])
    ordered = column.drop_nulls().sort()
    tail, head = ordered.slice(1), ordered.slice(0, max(len(ordered) - 1, 0))
    repeated = column.is_in(tail.filter(tail == head).unique())
    if column.null_count() > 1:
        repeated = repeated | column.is_null()
    return repeated.fill_null(False).to_numpy()


def _constant(column: pl.Series) -> bool:
    return column.null_count() == 0 and (len(column) == 0 or column.min() == column.max())


def key_scope(contract: TableContract) -> list[str]:
    """The columns a key must be unique over: the key within its partition, as the key check judges
    it, so a batch holding several partitions is judged as each of them would be alone."""
    column = contract.partition_column
    return [column, *contract.keys] if column and column not in contract.keys else list(contract.keys)


def judge_rows(table: pa.Table, contract: TableContract, *, judge_key: bool = True) -> RowVerdicts:
    """Evaluate every rule of ``contract`` on ``table`` (already cast to the contract's types).

    With ``judge_key`` false the key's uniqueness is not judged (a writer's block is not a unit the
    key is unique in). A failure that is not about rows (a missing column, a wrong type) raises
    ``SchemaMismatch`` naming the table, the column and the check.
    """
    n = table.num_rows
    empty = empty_lists(n)
    if contract.keyless_pandera is None or n == 0:
        return RowVerdicts(empty, empty)
    frame = pl.from_arrow(table)
    judged = judge_key and contract.keys
    key_rows = np.flatnonzero(repeated_keys(frame, key_scope(contract))) if judged else []
    try:
        contract.keyless_pandera.validate(frame, lazy=True)
        cases = None
    except pandera_errors.SchemaErrors as errors:
        cases = errors.failure_cases
    if cases is None and not len(key_rows):
        return RowVerdicts(empty, empty)
    if cases is None:
        cases = pl.DataFrame(
            schema={
                "schema_context": pl.String,
                "column": pl.String,
                "check": pl.String,
                "check_number": pl.Int32,
                "index": pl.Int32,
            }
        )
    kinds = cases.select(["schema_context", "column", "check", "check_number"]).unique()
    codes = {}
    for kind in kinds.iter_rows(named=True):
        code = _failure_code(contract, kind)
        if (
            code is None
            or cases.filter((pl.col("check") == kind["check"]) & pl.col("index").is_null()).height
        ):
            raise SchemaMismatch(
                f"{contract.name}: column {kind['column']} fails {kind['check']} for the whole batch"
            )
        codes[(kind["schema_context"], kind["column"], kind["check"], kind["check_number"])] = code
    order = {rule.code: i for i, rule in enumerate(contract.rules)}
    soft = {rule.code for rule in contract.rules if not rule.rejects}
    lookup = pl.DataFrame(
        [
            {"schema_context": k[0], "column": k[1], "check": k[2], "check_number": k[3], "code": code}
            for k, code in codes.items()
        ],
        schema={
            "schema_context": pl.String,
            "column": pl.String,
            "check": pl.String,
            "check_number": pl.Int32,
            "code": pl.String,
        },
    ).with_columns(
        pl.col("code").replace_strict(order, default=len(order), return_dtype=pl.Int64).alias("ordinal"),
        pl.col("code").is_in(list(soft)).alias("is_soft"),
    )
    failed = cases.select(["schema_context", "column", "check", "check_number", "index"]).join(
        lookup, on=["schema_context", "column", "check", "check_number"], nulls_equal=True
    )
    failed = failed.select(["index", "code", "ordinal", "is_soft"]).with_columns(
        pl.col("index").cast(pl.Int64)
    )
    if len(key_rows):
        code = contract.key_rule_code
        key_failures = pl.DataFrame({"index": pl.Series(key_rows, dtype=pl.Int64)}).with_columns(
            code=pl.lit(code, pl.String), ordinal=pl.lit(order[code], pl.Int64), is_soft=pl.lit(False)
        )
        failed = pl.concat([failed, key_failures])
    failed = failed.unique(["index", "code"]).sort(["index", "ordinal"])
    if contract.keys:
        # A row whose key is missing is reported as missing, not as a duplicate of other such rows.
        missing_key = failed.filter(pl.col("code").is_in([f"{k}.{NOT_NULL}" for k in contract.keys]))
        failed = failed.filter(
            (pl.col("code") != contract.key_rule_code)
            | ~pl.col("index").is_in(missing_key["index"].implode())
        )
    return RowVerdicts(
        _codes_per_row(failed.filter(~pl.col("is_soft")), n),
        _codes_per_row(failed.filter(pl.col("is_soft")), n),
    )


def _codes_per_row(failed: pl.DataFrame, n: int) -> pa.ListArray:
    grouped = failed.group_by("index", maintain_order=True).agg(pl.col("code"))
    rows = pl.DataFrame({"index": np.arange(n, dtype=np.int64)}).join(
        grouped, on="index", how="left", maintain_order="left"
    )
    codes = rows.get_column("code").fill_null(pl.lit([], dtype=pl.List(pl.String)))
    return pa.array(codes.to_arrow()).cast(CODES)


def enforce(table: pa.Table, contract: TableContract) -> pa.Table:
    """Cast to the contract and refuse rows that break a rejecting rule, naming the rule, the count
    and an example; soft rules pass. The writer calls this on every block it writes.

    The key is not judged here: a block is not a partition, so duplicates in it mean nothing
    either way. The loads judge keys where a batch is a whole unit (a lake day, a customer's
    versions) and the key checks judge them over whole partitions."""
    table = conform(table, contract, nulls_allowed=True)
    codes = judge_rows(table, contract, judge_key=False).rejecting
    rejected = pc.greater(pc.list_value_length(codes), 0)
    if pc.any(rejected).as_py():
        counts = rule_counts(codes)
        example = table.filter(rejected).slice(0, 1).to_pylist()[0]
        broken = ", ".join(f"{code} ({count} rows)" for code, count in counts.items())
        raise ContractViolation(f"{contract.name}: rows break the contract: {broken}; e.g. {example}")
    return conform(table, contract)


def rule_counts(codes: pa.ListArray) -> dict[str, int]:
    flat = pc.list_flatten(codes)
    if len(flat) == 0:
        return {}
    counted = pc.value_counts(flat)
    return dict(sorted(zip(counted.field("values").to_pylist(), counted.field("counts").to_pylist())))


def rule_catalog(contract: TableContract) -> list[dict]:
    """The contract's rules for metadata and docs."""
    return [
        {"code": r.code, "column": r.column, "rule": r.description, "severity": r.severity}
        for r in contract.rules
    ]


RULE_PREFIX = "rule:"


def rule_hits(codes: pa.ListArray | pa.ChunkedArray, partition: pa.ChunkedArray, column: str) -> dict:
    """For a router: per rule code, one row holding the partition value for every row that broke it,
    named ``rule:<code>``, so the writer counts rule failures per partition without writing them."""
    codes = codes.combine_chunks() if isinstance(codes, pa.ChunkedArray) else codes
    flat = pc.list_flatten(codes)
    if len(flat) == 0:
        return {}
    owners = partition.take(pc.list_parent_indices(codes))
    hits = pa.table({"code": flat, column: owners})
    return {
        f"{RULE_PREFIX}{code}": hits.filter(pc.equal(hits.column("code"), code)).select([column])
        for code in pc.unique(flat).to_pylist()
    }


def rule_counts_from(other_counts: Mapping[str, int]) -> dict[str, int]:
    """The ``rule:<code>`` counts of a write's other outputs, by code (rules broken at least once)."""
    return {
        name.removeprefix(RULE_PREFIX): n
        for name, n in sorted(other_counts.items())
        if name.startswith(RULE_PREFIX) and n
    }
