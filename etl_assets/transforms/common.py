"""Small Arrow kernels shared by the transforms."""

from __future__ import annotations

import numpy as np
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


def first_row_of_each_group(table: pa.Table, columns: list[str]) -> np.ndarray:
    """Boolean mask keeping the first row of every group of equal ``columns`` values.

    Nulls compare equal to nulls, as in SQL ``DISTINCT``.
    """
    with_index = table.select(columns).append_column("__row", pa.array(np.arange(table.num_rows)))
    kept = with_index.group_by(columns, use_threads=False).aggregate([("__row", "min")])
    mask = np.zeros(table.num_rows, dtype=bool)
    mask[kept.column("__row_min").to_numpy()] = True
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
