"""The orders lake: hive-partitioned Parquet, one folder per UTC day, read one day per Ray task."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date
from functools import partial

import pyarrow as pa
import pyarrow.parquet as pq
import ray.data

from etl_assets import storage
from etl_assets.contracts.drift import schema_drift
from etl_assets.sample_data import ORDERS_SCHEMA
from etl_assets.sources.crm import SourceError

log = logging.getLogger(__name__)
LAKE_SCHEMA = ORDERS_SCHEMA
DayTransform = Callable[[pa.Table], pa.Table]


@dataclass(frozen=True)
class LakeDay:
    day: date
    files: tuple[str, ...]
    rows: int
    # Columns the files hold that the contract does not know: ignored, name -> type.
    ignored_columns: dict[str, str] = field(default_factory=dict)


def day_folder(lake_dir: str, day: date) -> str:
    return storage.join(str(lake_dir), f"date={day.isoformat()}")


def inspect_days(lake_dir: str, days: Sequence[date]) -> list[LakeDay]:
    """Check every day's folder and file footers before any data is read.

    Fails naming the path for a missing folder, an unreadable file, or a column that is missing or
    has another type (both types named); a column the contract does not know is ignored, and
    reported in ``LakeDay.ignored_columns`` for the asset to warn about.
    """
    found = []
    for day in days:
        folder = day_folder(lake_dir, day)
        files = storage.files(folder, ".parquet")
        if not files:
            raise SourceError(f"orders lake partition {folder} is missing or holds no Parquet files")
        rows = 0
        ignored: dict[str, str] = {}
        for path in files:
            try:
                fs, on_fs = storage.filesystem(path)
                meta = pq.read_metadata(on_fs, filesystem=fs)
                schema = pq.read_schema(on_fs, filesystem=fs)
            except Exception as exc:
                raise SourceError(f"orders lake file {path} is unreadable: {exc}") from exc
            drift = schema_drift(schema, LAKE_SCHEMA)
            if drift.breaking:
                raise SourceError(f"orders lake file {path}: {drift.describe()}")
            if drift.added:
                log.warning("orders lake file %s: ignoring %s", path, drift.describe())
                ignored.update({name: str(type_) for name, type_ in drift.added})
            rows += meta.num_rows
        found.append(LakeDay(day, tuple(files), rows, ignored))
    return found


def _read_file(location: str) -> pa.Table:
    fs, path = storage.filesystem(location)
    return pq.read_table(path, columns=LAKE_SCHEMA.names, schema=LAKE_SCHEMA, filesystem=fs)


def _read_day(batch: pa.Table, transform: DayTransform) -> pa.Table:
    tables = []
    for day, files in zip(batch.column("day").to_pylist(), batch.column("files").to_pylist()):
        table = pa.concat_tables(_read_file(f) for f in files)
        table = table.append_column("order_date", pa.array([day] * table.num_rows, pa.date32()))
        tables.append(transform(table))
    return pa.concat_tables(tables)


def read_orders_days(days: Sequence[LakeDay], transform: DayTransform) -> ray.data.Dataset:
    """One Ray task per lake day: the day's files are read together and ``transform`` sees the
    whole day, so exact duplicates delivered in different files meet in one batch."""
    items = pa.table(
        {
            "day": pa.array([d.day for d in days], pa.date32()),
            "files": pa.array([list(d.files) for d in days], pa.list_(pa.string())),
        }
    )
    blocks = [items.slice(i, 1) for i in range(items.num_rows)]
    return ray.data.from_arrow(blocks).map_batches(
        partial(_read_day, transform=transform), batch_format="pyarrow", batch_size=1
    )
