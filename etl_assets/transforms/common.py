"""Small Arrow kernels shared by the transforms."""

from __future__ import annotations

from decimal import Decimal

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from etl_assets.contracts import UTC_TS


def to_utc_timestamp(column: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """Timestamps as ``timestamp[us, UTC]`` from ISO strings (SQLite) or datetimes (PostgreSQL).

    Naive values are read as UTC, which is how the CRM stores them.
    """
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        column = pc.cast(column, pa.timestamp("us"))
    return pc.cast(column, UTC_TS)


def utc_date(column: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """The UTC calendar day of a UTC timestamp column."""
    return pc.cast(pc.cast(column, pa.timestamp("us")), pa.date32())


def hash_buckets(column: pa.ChunkedArray | pa.Array, buckets: int | np.ndarray) -> np.ndarray:
    """Each row's bucket in ``range(buckets)`` by a hash of its value; every null in bucket 0.
    ``buckets`` may also be an array, a count for each row. Integers get a multiplicative hash
    (ids often come in strides a plain modulo would pile into few buckets); other types polars'
    hash."""
    if pa.types.is_integer(column.type):
        values = pc.fill_null(column, 0).to_numpy(zero_copy_only=False).astype(np.uint64)
        with np.errstate(over="ignore"):
            hashed = (values * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(33)
    else:
        series = pl.from_arrow(column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column)
        hashed = np.where(series.is_null().to_numpy(), np.uint64(0), series.hash(seed=0).to_numpy())
    return (hashed % np.asarray(buckets, np.uint64)).astype(np.int64)


def cents_text(total: object) -> str:
    """A sum of money as text to the cent, the same from a database's float, decimal or null (no
    rows: 0) and never ``-0.00``, so two systems' totals compare as text."""
    cents = Decimal(str(total if total is not None else 0)).quantize(Decimal("0.01"))
    return f"{cents + 0:.2f}"


def round_to(values: pa.ChunkedArray | pa.Array, digits: int) -> pa.ChunkedArray | pa.Array:
    """``values`` rounded to ``digits`` decimals, the same double whatever tiny error a sum carries
    (pyarrow's ``round(x, digits)`` returns a value already within rounding error unchanged, so
    sums added in another order could differ in their last bit)."""
    scale = float(10**digits)
    return pc.divide(pc.round(pc.multiply(values, scale)), scale)


def first_row_of_each_group(table: pa.Table, columns: list[str]) -> np.ndarray:
    """Boolean mask keeping the first row of every group of equal ``columns`` values.

    Nulls compare equal to nulls, as in SQL ``DISTINCT``.
    """
    with_index = table.select(columns).append_column("__row", pa.array(np.arange(table.num_rows)))
    kept = with_index.group_by(columns, use_threads=False).aggregate([("__row", "min")])
    mask = np.zeros(table.num_rows, dtype=bool)
    mask[kept.column("__row_min").to_numpy()] = True
    return mask


def first_copy_of_each_row(table: pa.Table, key: str) -> np.ndarray:
    """``first_row_of_each_group(table, table.column_names)`` for a table whose equal rows have
    equal ``key`` values: only rows whose key repeats, or is null, are compared in full.

    Comparing whole rows (strings included) costs several times more than hashing one column, and
    repeated keys are rare, so this is where most of a lake day's de-duplication time goes.
    """
    keys = pl.from_arrow(table.column(key).combine_chunks())
    # A sort finds the repeated keys several times faster than a hash over millions of distinct ones.
    ordered = keys.drop_nulls().sort()
    repeats = ordered.slice(1).filter(ordered.slice(1) == ordered.slice(0, max(len(ordered) - 1, 0)))
    candidates = (keys.is_in(repeats.unique()) | keys.is_null()).to_numpy()
    mask = ~candidates
    if candidates.any():
        index = np.flatnonzero(candidates)
        subset = table.take(pa.array(index))
        mask[index[first_row_of_each_group(subset, subset.column_names)]] = True
    return mask


def previous_differs(sorted_keys: list[np.ndarray]) -> np.ndarray:
    """For rows sorted by ``sorted_keys``: true where a row starts a new key."""
    n = len(sorted_keys[0]) if sorted_keys else 0
    starts = np.ones(n, dtype=bool)
    if n > 1:
        starts[1:] = False
        for key in sorted_keys:
            starts[1:] |= key[1:] != key[:-1]
    return starts
