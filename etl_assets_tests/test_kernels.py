"""The fast kernels behind the performance work, each against a plain independent computation."""

import json
from datetime import UTC, datetime
from functools import partial

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pytest

from etl_assets.contracts import CUSTOMERS, ORDERS, conform
from etl_assets.contracts.validation import repeated_keys, spread_lists
from etl_assets.day_buckets import DayBuckets, day_buckets
from etl_assets.sizing import runs
from etl_assets.sources.orders_lake import BUCKET_ROWS, SPLIT_ROWS, LakeDay, buckets_per_day
from etl_assets.transforms.check_partials import KEY_SAMPLE_ROWS, key_order, key_tally, merged
from etl_assets.transforms.common import (
    first_copy_of_each_row,
    first_row_of_each_group,
    hash_buckets,
    round_to,
)
from etl_assets.transforms.customer_orders import join_point_in_time, prepare_dimension
from etl_assets_tests.test_transforms import lake_day

DAY = datetime(2024, 1, 2, tzinfo=UTC)
DIMENSION = ["customer_id", "valid_from", "name", "customer_segment", "country"]


def lake_rows(rng: np.random.Generator, n: int) -> pa.Table:
    """Lake-like rows with repeated ids, exact copies and nulls in the id."""
    ids = rng.integers(0, n // 2, n)
    table = pa.table(
        {
            "order_id": pa.array(ids, mask=rng.random(n) < 0.05),
            "customer_id": pa.array(rng.integers(0, 5, n)),
            "channel": pa.array(rng.choice(["web", "app", None], n)),
        }
    )
    copies = rng.integers(0, n, n // 3)
    with_copies = pa.concat_tables([table, table.take(pa.array(copies))])
    return with_copies.take(pa.array(rng.permutation(with_copies.num_rows)))


@pytest.mark.parametrize("seed", range(5))
def test_first_copy_of_each_row_is_the_full_row_comparison(seed):
    table = lake_rows(np.random.default_rng(seed), 2000)
    fast = first_copy_of_each_row(table, "order_id")
    assert np.array_equal(fast, first_row_of_each_group(table, table.column_names))
    # Independently: pandas keeps the first of every group of equal rows (nulls equal).
    assert np.array_equal(fast, ~table.to_pandas().duplicated(keep="first").to_numpy())


@pytest.mark.parametrize("seed", range(5))
def test_repeated_keys_match_polars_is_duplicated(seed):
    frame = pl.from_arrow(lake_rows(np.random.default_rng(seed), 2000))
    one = ["order_id"]
    assert np.array_equal(repeated_keys(frame, one), frame.select(one).is_duplicated().to_numpy())
    two = ["order_id", "customer_id"]
    assert np.array_equal(repeated_keys(frame, two), frame.select(two).is_duplicated().to_numpy())


def test_spread_lists_puts_each_list_at_its_row_and_empty_lists_elsewhere():
    lists = pa.array([["a"], [], ["b", "c"]], pa.list_(pa.string()))
    keep = np.array([False, True, True, False, True])
    assert spread_lists(lists, keep).to_pylist() == [[], ["a"], [], [], ["b", "c"]]


def test_hash_buckets_keep_equal_keys_together_and_spread_strided_ids():
    ids = pa.array(np.arange(0, 1_000_000, 1000))  # a stride a modulo would pile up
    buckets = hash_buckets(ids, 8)
    assert buckets.min() >= 0 and buckets.max() < 8
    assert np.bincount(buckets, minlength=8).min() > len(ids) / 8 * 0.7
    again = hash_buckets(pa.array(np.repeat(np.arange(0, 1_000_000, 1000), 2)), 8)
    assert np.array_equal(again[::2], again[1::2]) and np.array_equal(again[::2], buckets)
    words = pa.array(["a", "b", None, "a", None])
    spread = hash_buckets(words, 4)
    assert spread[0] == spread[3] and spread[2] == spread[4] == 0


def test_sized_items_are_cut_into_runs_of_about_the_target():
    assert runs([300, 300, 500, 100, 200], 600) == [[0, 1], [2, 3], [4]]
    assert runs([900, 100], 600) == [[0], [1]]  # an item past the target is a run of its own
    assert runs([0, 0, 5], 1) == [[0, 1], [2]] and runs([], 10) == []


@pytest.mark.parametrize(
    ("rows", "cpus", "wanted"),
    [
        ([600_000], 2, [2]),  # alone and large: a bucket per CPU
        ([600_000], 8, [2]),  # ... each of at least SPLIT_ROWS
        ([600_000], 1, [1]),  # one CPU: nothing to share
        ([400_000], 2, [1]),  # too small to be worth an exchange
        ([1_200_000], 2, [2]),  # over a bucket: buckets of about BUCKET_ROWS
        ([1_200_000], 8, [4]),  # alone: as many as CPUs allow, each of at least SPLIT_ROWS
        ([600_000, 1_000, 0], 8, [1, 1, 1]),  # several days: shared by _day_groups, not exchanged
        ([1_200_000, 1_000, 0], 8, [2, 1, 1]),  # a day over a bucket: by size (days of 1 read whole)
        ([10_000_000], 2, [10]),  # alone but big: by size, whatever the CPUs
        ([2_500_000], 2, [3]),
        ([500_000], 2, [2]),
        ([499_999], 2, [1]),
        ([1_000_001], 1, [2]),
        ([0], 2, [1]),
    ],
)
def test_buckets_per_day(rows, cpus, wanted):
    assert (BUCKET_ROWS, SPLIT_ROWS) == (1_000_000, 250_000)
    days = [LakeDay(datetime(2024, 1, 1 + i).date(), (), n) for i, n in enumerate(rows)]
    assert buckets_per_day(days, cpus) == wanted


@pytest.mark.parametrize("sparse", [False, True], ids=["dense ids", "sparse ids"])
def test_point_in_time_join_equals_pandas_merge_asof(sparse):
    rng = np.random.default_rng(3)
    customer_ids = np.arange(1, 301) * (10**9 if sparse else 1)
    versions = 900
    start = pd.Timestamp("2024-01-01", tz="UTC")
    dim = pa.table(
        {
            "customer_id": pa.array(rng.choice(customer_ids, versions)),
            "valid_from": pa.array(start + pd.to_timedelta(rng.integers(0, 3 * 86400, versions), unit="s")),
            "name": pa.array([f"n{i}" for i in range(versions)]),
            "customer_segment": pa.array(rng.choice(["a", "b"], versions)),
            "country": pa.array(rng.choice(["GB", "FR"], versions)),
        }
    ).cast(pa.schema([CUSTOMERS.schema.field(c) for c in DIMENSION]))
    # One version per (customer, valid_from), as in the customers table.
    dim = dim.group_by(DIMENSION[:2]).aggregate([(c, "min") for c in DIMENSION[2:]]).rename_columns(DIMENSION)
    hours = rng.integers(0, 24, 3000)
    orders = lake_day(
        [
            # Unknown customers too, inside and outside the range of known ids.
            (i, int(rng.choice(np.r_[customer_ids, [7, 10**12]])), DAY.replace(hour=int(h)), 1.0)
            for i, h in enumerate(hours)
        ],
        DAY.date(),
    )
    joined = join_point_in_time(conform(orders, ORDERS), prepare_dimension(dim)).to_pandas()
    wanted = pd.merge_asof(
        orders.to_pandas().sort_values("order_ts"),
        dim.to_pandas().sort_values("valid_from"),
        left_on="order_ts",
        right_on="valid_from",
        by="customer_id",
        direction="backward",
    ).sort_values("order_id")
    assert joined["order_id"].tolist() == list(range(len(hours)))
    assert joined["customer_name"].tolist() == wanted["name"].where(wanted["name"].notna(), None).tolist()
    assert joined["customer_valid_from"].tolist() == wanted["valid_from"].tolist()
    assert joined["is_orphan"].tolist() == wanted["valid_from"].isna().tolist()
    assert joined["is_orphan"].any() and not joined["is_orphan"].all()


def test_rounding_to_the_cent_gives_one_double_whatever_the_summing_order():
    rng = np.random.default_rng(5)
    amounts = np.round(rng.random(1000) * 100, 2)
    sums = [sum(rng.permutation(amounts).tolist()) for _ in range(20)]
    assert len(set(sums)) > 1  # the raw sums do differ in their last bits
    rounded = round_to(pa.array(sums), 2).to_pylist()
    assert set(rounded) == {round(sum(amounts.tolist()), 2)}
    assert round_to(pa.array([173.44999999999999, 173.45000000000002]), 2).to_pylist() == [173.45, 173.45]


@pytest.mark.parametrize("seed", range(3))
def test_key_tallies_of_buckets_merged_in_any_order_count_null_keys_as_pandas_does(seed):
    rng = np.random.default_rng(seed)
    table = lake_rows(rng, 3000).select(["order_id"])
    table = table.append_column("day", pa.array(rng.choice(["2024-01-01", "2024-01-02"], table.num_rows)))
    # Buckets as an exchange on the key makes them (a null key's rows share one), tallied apart.
    bucket = hash_buckets(table.column("order_id"), 7)
    tally = partial(key_tally, keys=["order_id"], column="day")
    parts = [tally(table.filter(pa.array(bucket == b))) for b in range(7)]
    rng.shuffle(parts)
    found = {t["value"]: t for t in merged(parts, ["value"], KEY_SAMPLE_ROWS, key_order(["order_id"]))}

    counts = table.to_pandas().groupby(["day", "order_id"], dropna=False).size()
    repeated = counts[counts > 1].reset_index(name="count_all")
    assert repeated["order_id"].isna().any()  # null ids repeat, and count as one key per day
    for value, rows in repeated.groupby("day"):
        rows = rows.assign(null=rows["order_id"].isna()).sort_values(["null", "order_id"])
        first = [
            {"order_id": None if pd.isna(i) else int(i), "count_all": int(c)}
            for i, c in zip(rows["order_id"][:KEY_SAMPLE_ROWS], rows["count_all"][:KEY_SAMPLE_ROWS])
        ]
        assert found[value]["repeated"] == len(rows)
        assert [json.loads(s) for s in found[value]["samples"]] == first
    assert set(found) == set(repeated["day"])


def _own(*counts: int) -> list[tuple[int, int]]:
    """Days with buckets of their own: each day's (first bucket, buckets)."""
    firsts = np.concatenate([[0], np.cumsum(counts)[:-1]]).tolist()
    return list(zip(firsts, counts, strict=True))


@pytest.mark.parametrize(
    "rows, cpus, most, wanted",
    [
        # A month of 1M-order days: a bucket (a file) a day.
        ([1_000_000] * 30, 2, 64, [_own(*[1] * 30)]),
        # A month of 10,000-order days on two CPUs: 15 days to a bucket, a bucket per CPU.
        ([10_000] * 30, 2, 64, [[(0, 1)] * 15 + [(1, 1)] * 15]),
        ([100_000] * 30, 2, 64, [[(0, 1)] * 10 + [(1, 1)] * 10 + [(2, 1)] * 10]),
        ([1_000], 2, 64, [[(0, 2)]]),  # a lone small day: a bucket per CPU
        ([10_000] * 3, 2, 64, [_own(1, 1, 1)]),  # two would pass the window's half
        ([2_500_000, 0, None], 2, 64, [[(0, 3), (3, 1), (3, 1)]]),  # by the day's rows; none: none
        ([30_000_000], 2, 64, [[(0, 30)]]),
        ([5_000_000, 3_000_000, 4_000_000, 70_000_000], 2, 8, [_own(5, 3), _own(4), _own(70)]),
    ],
)
def test_day_buckets_give_each_big_day_buckets_of_its_own_and_pack_small_days(rows, cpus, most, wanted):
    days = [datetime(2024, 1, 1 + i).date() for i in range(len(rows))]
    counts = {d.isoformat(): n for d, n in zip(days, rows, strict=True) if n is not None}
    layouts = day_buckets(days, counts, cpus, 1_000_000, most)
    assert [list(zip(layout.first, layout.counts, strict=True)) for layout in layouts] == wanted
    assert [d for layout in layouts for d in layout.days] == days
    assert [layout.buckets for layout in layouts] == [max(f + c for f, c in w) for w in wanted]


def test_day_buckets_take_an_unknown_count_as_none_and_refuse_no_day():
    days = [datetime(2024, 1, 1).date(), datetime(2024, 1, 2).date()]
    # A file without its row count (a Delta add action without numRecords) sums to None.
    (layout,) = day_buckets(days, {"2024-01-01": 3_000_000, "2024-01-02": None}, 2, 1_000_000, 64)
    assert list(zip(layout.first, layout.counts, strict=True)) == [(0, 3), (3, 1)]
    with pytest.raises(ValueError, match="at least one day"):
        day_buckets([], {}, 2, 1_000_000, 64)


def test_day_buckets_put_a_day_in_its_buckets_and_a_key_in_one_of_them():
    days = tuple(datetime(2024, 1, 1 + i).date() for i in range(3))
    layout = DayBuckets(days, (0, 3, 4), (3, 1, 4))
    rng = np.random.default_rng(5)
    day_of_row = rng.integers(0, 3, 5_000)
    keys = rng.integers(0, 400, 5_000)
    frame = pd.DataFrame({"day": day_of_row, "key": keys})
    frame["bucket"] = layout.of(pa.array([days[i] for i in day_of_row], pa.date32()), pa.array(keys))
    ranges = frame.groupby("day")["bucket"].agg(["min", "max", "nunique"])
    assert ranges.values.tolist() == [[0, 2, 3], [3, 3, 1], [4, 7, 4]]
    assert (frame.groupby(["day", "key"])["bucket"].nunique() == 1).all()
    shared = DayBuckets(days, (0, 0, 1), (1, 1, 2))  # the first two days packed in one bucket
    frame["bucket"] = shared.of(pa.array([days[i] for i in day_of_row], pa.date32()), pa.array(keys))
    assert frame.groupby("day")["bucket"].agg(["min", "max"]).values.tolist() == [[0, 0], [0, 0], [1, 2]]
    with pytest.raises(
        ValueError,
        match=r"outside the exchange's days 2024-01-01\.\.2024-01-03: 2024-01-09$",
    ):
        layout.of(pa.array([datetime(2024, 1, 9).date()], pa.date32()), pa.array([1]))
