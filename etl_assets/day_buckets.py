"""An exchange's buckets laid out by day, for a reduce whose keys include the day.

A window's rows exchanged by a hash of their key alone put every day into every bucket, and a
table written from the buckets gets a file per bucket per day: a 30-day window of 1M-order days
in 30 buckets wrote `daily_customer_metrics` as 900 files of about 170 rows. Laid out by day, a
day's rows go to buckets of that day alone when it is big (one per bucket's worth of rows, by a
hash of the key), and consecutive small days share one bucket (a bucket per 15 days of a month of
10,000-order days on two CPUs: as many tasks as before, half the files). Either way a day is in
one exchange and its rows in buckets no other day's rows enter unless the days share their only
bucket, so a table gets one file per bucket of a big day and one per small day. The exchange
moves the same rows; only their grouping into buckets changes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from functools import partial

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from etl_assets.ray_steps import sorted_into_buckets
from etl_assets.sizing import runs
from etl_assets.transforms.common import hash_buckets


@dataclass(frozen=True)
class DayBuckets:
    """Days sharing one exchange, in order, and for each its first bucket and its number of
    buckets (days packed together share one bucket: the same first, a count of one)."""

    days: tuple[date, ...]
    first: tuple[int, ...]
    counts: tuple[int, ...]

    @property
    def buckets(self) -> int:
        return max(f + c for f, c in zip(self.first, self.counts, strict=True))

    def of(self, day_values: pa.ChunkedArray | pa.Array, keys: pa.ChunkedArray | pa.Array) -> np.ndarray:
        """Each row's bucket: among its day's buckets, by a hash of its key."""
        index = pc.index_in(day_values, value_set=pa.array(self.days, pa.date32()))
        if index.null_count:
            outside = pc.filter(day_values, pc.is_null(index)).unique().to_pylist()
            raise ValueError(
                f"rows of days outside the exchange's days {self.days[0]}..{self.days[-1]}: "
                + ", ".join(str(d) for d in outside)
            )
        row_day = index.to_numpy(zero_copy_only=False)
        first, counts = np.asarray(self.first, np.int64), np.asarray(self.counts, np.int64)
        return first[row_day] + hash_buckets(keys, counts[row_day])


def day_buckets(
    days: Sequence[date], rows_per_day: Mapping[str, int], cpus: int, bucket_rows: int, most: int
) -> list[DayBuckets]:
    """The window's days (``rows_per_day`` by ISO day; a day missing from it counts none) in
    exchanges of at most ``most`` buckets. A bucket takes about ``bucket_rows`` rows, or the
    window's rows over ``cpus`` when that is less, so every CPU gets a bucket when the window's
    days can be divided so: consecutive days that fit together share one; a day of more has
    buckets of its own. A day of more than ``most`` buckets is an exchange of its own. Each
    exchange reads its days and runs its map side by itself, one after another: a long window of
    big days (a year of 10M-order days: about 58 exchanges) pays that once per exchange."""
    if not days:
        raise ValueError("an exchange laid out by day needs at least one day")
    rows = [rows_per_day.get(d.isoformat()) or 0 for d in days]
    size = max(1, min(bucket_rows, -(-sum(rows) // cpus)))
    groups = runs(rows, size)
    buckets_of = [max(1, -(-sum(rows[i] for i in group) // size)) for group in groups]
    layouts = []
    for exchange in runs(buckets_of, most):
        laid: list[tuple[date, int, int]] = []
        first = 0
        for g in exchange:
            laid += [(days[i], first, buckets_of[g]) for i in groups[g]]
            first += buckets_of[g]
        layouts.append(DayBuckets(*(tuple(column) for column in zip(*laid, strict=True))))
    return layouts


def _apply_and_bucket(
    batch: pa.Table, fn: Callable[[pa.Table], pa.Table], day: str, key: str, layout: DayBuckets
) -> pa.Table:
    out = fn(batch)
    return sorted_into_buckets(out, layout.of(out.column(day), out.column(key)))


def bucketed_by_day(
    fn: Callable[[pa.Table], pa.Table], day: str, key: str, layout: DayBuckets
) -> Callable[[pa.Table], pa.Table]:
    """``fn``, its output sorted into ``layout``'s buckets by its ``day`` column and a hash of
    ``key``, for ``ray_steps.exchange``."""
    return partial(_apply_and_bucket, fn=fn, day=day, key=key, layout=layout)
