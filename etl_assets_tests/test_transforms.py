"""Transforms on hand-made Arrow tables: no Ray, no Dagster."""

from datetime import UTC, date, datetime
from decimal import Decimal

import pandas as pd
import pyarrow as pa
import pytest

from etl_assets.contracts import ORDERS, conform
from etl_assets.transforms.common import cents_text
from etl_assets.transforms.customer_orders import join_point_in_time, prepare_dimension
from etl_assets.transforms.customers import (
    CHANGED,
    SOURCE_COLUMNS,
    clean_customers,
    mark_versions,
    scd2_rebuild,
)
from etl_assets.transforms.metrics import combine_daily_metrics, partial_daily_metrics
from etl_assets.transforms.orders import classify_orders, split_classified

UTC = UTC


def ts(day: int, hour: int = 0) -> datetime:
    return datetime(2024, 1, day, hour, tzinfo=UTC)


def crm_rows(rows: list[tuple]) -> pa.Table:
    return pa.table({n: [r[i] for r in rows] for i, n in enumerate(SOURCE_COLUMNS)})


def test_clean_customers_tidies_fields_and_collapses_exact_duplicates():
    raw = crm_rows(
        [
            (
                1,
                "Ada",
                "  Ada@Example.COM ",
                "+1 (555) 123-4567",
                "consumer",
                "GB",
                "2024-01-01 00:00:00.000000",
                "2024-01-01 10:00:00.500000",
            ),
            (
                1,
                "Ada",
                "  Ada@Example.COM ",
                "+1 (555) 123-4567",
                "consumer",
                "GB",
                "2024-01-01 00:00:00.000000",
                "2024-01-01 10:00:00.500000",
            ),
            (
                2,
                "Alan",
                "ALAN@x.org",
                "555.987.6543",
                "enterprise",
                "US",
                "2024-01-01 00:00:00.000000",
                "2024-01-02 23:59:59.999999",
            ),
        ]
    )
    out = clean_customers(raw).to_pylist()
    assert len(out) == 2
    assert out[0]["email"] == "ada@example.com"
    assert out[0]["phone"] == "15551234567"
    assert out[0]["updated_at"] == datetime(2024, 1, 1, 10, 0, 0, 500000, tzinfo=UTC)
    assert out[1]["updated_date"] == date(2024, 1, 2)
    assert out[1]["phone"] == "5559876543"


def versions(rows: list[tuple[int, datetime, str]], incoming: bool) -> pa.Table:
    table = pa.table(
        {
            "customer_id": pa.array([r[0] for r in rows], pa.int64()),
            "name": [f"c{r[0]}" for r in rows],
            "email": ["e"] * len(rows),
            "phone": ["1"] * len(rows),
            "customer_segment": [r[2] for r in rows],
            "country": ["US"] * len(rows),
            "created_at": pa.array([r[1] for r in rows], pa.timestamp("us", tz="UTC")),
            "updated_at": pa.array([r[1] for r in rows], pa.timestamp("us", tz="UTC")),
        }
    )
    return mark_versions(table, incoming)


def test_scd2_validity_chain_and_current_flag():
    rows = [(1, ts(1), "a"), (1, ts(3), "b"), (1, ts(2), "c"), (2, ts(1), "a")]
    out = scd2_rebuild(versions(rows, True)).to_pylist()
    chain = [(r["customer_id"], r["valid_from"], r["valid_to"], r["is_current"], r[CHANGED]) for r in out]
    assert chain == [
        (1, ts(1), ts(2), False, True),
        (1, ts(2), ts(3), False, True),
        (1, ts(3), None, True, True),
        (2, ts(1), None, True, True),
    ]


def test_scd2_marks_only_customers_with_incoming_versions_changed_and_incoming_wins():
    existing = versions([(1, ts(1), "old"), (2, ts(1), "x"), (2, ts(3), "y")], incoming=False)
    incoming = versions([(1, ts(1), "new"), (1, ts(2), "later")], incoming=True)
    out = scd2_rebuild(pa.concat_tables([existing, incoming])).to_pylist()
    rows = [(r["customer_id"], r["customer_segment"], r["valid_to"], r[CHANGED]) for r in out]
    assert rows == [
        (1, "new", ts(2), True),
        (1, "later", None, True),
        (2, "x", ts(3), False),
        (2, "y", None, False),
    ]


def test_scd2_of_no_versions_is_empty_with_the_changed_column():
    out = scd2_rebuild(versions([], True))
    assert out.num_rows == 0
    assert out.schema.field(CHANGED) == pa.field(CHANGED, pa.bool_(), nullable=False)


def load_days(order: list[int], days: list[list[tuple]], rewrite: bool) -> pa.Table:
    """The dimension after loading ``days`` in ``order``: each load rewrites the table from the
    rebuild (as Delta does) or merges the changed rows by (customer_id, valid_from) (as a SQL
    warehouse does)."""
    table = None
    for i in order:
        incoming = versions(days[i], True)
        batch = (
            incoming
            if table is None
            else pa.concat_tables([mark_versions(table.select(incoming.column_names[:-1]), False), incoming])
        )
        rebuilt = scd2_rebuild(batch)
        if rewrite or table is None:
            table = rebuilt.drop_columns([CHANGED])
        else:
            changed = rebuilt.filter(rebuilt.column(CHANGED)).drop_columns([CHANGED])
            keys = set(zip(changed["customer_id"].to_pylist(), changed["valid_from"].to_pylist()))
            mask = [
                (c, v) not in keys
                for c, v in zip(table["customer_id"].to_pylist(), table["valid_from"].to_pylist())
            ]
            table = pa.concat_tables([table.filter(pa.array(mask)), changed])
        table = table.sort_by([("customer_id", "ascending"), ("valid_from", "ascending")])
    return table


@pytest.mark.parametrize("rewrite", [True, False], ids=["rewrite", "merge"])
@pytest.mark.parametrize("order", [[0, 1, 2], [2, 1, 0], [1, 2, 0]])
def test_scd2_is_the_same_whatever_order_the_days_arrive_in(order, rewrite):
    days = [[(1, ts(1), "a")], [(1, ts(2), "b"), (2, ts(2), "z")], [(1, ts(3), "c")]]
    table = load_days(order, days, rewrite)
    assert table.column("valid_to").to_pylist() == [ts(2), ts(3), None, None]
    assert table.column("is_current").to_pylist() == [False, False, True, True]
    assert table.column("customer_segment").to_pylist() == ["a", "b", "c", "z"]


def lake_day(rows: list[tuple], folder: date) -> pa.Table:
    return pa.table(
        {
            "order_id": pa.array([r[0] for r in rows], pa.int64()),
            "customer_id": pa.array([r[1] for r in rows], pa.int64()),
            "order_ts": pa.array([r[2] for r in rows], pa.timestamp("us", tz="UTC")),
            "order_amount": pa.array([r[3] for r in rows], pa.float64()),
            "quantity": pa.array([1] * len(rows), pa.int32()),
            "channel": ["web"] * len(rows),
            "order_date": pa.array([folder] * len(rows), pa.date32()),
        }
    )


def test_classify_orders_gives_each_bad_row_its_rule_codes():
    rows = [
        (1, 10, ts(2, 5), 10.0),  # valid
        (1, 10, ts(2, 5), 10.0),  # exact duplicate
        (None, 10, ts(2, 5), 10.0),
        (3, None, ts(2, 5), 10.0),
        (4, 10, None, 10.0),
        (5, 10, ts(2, 5), 0.0),
        (6, 10, ts(2, 5), -3.0),
        (7, 10, ts(3, 0), 5.0),  # next day, in the 2nd's folder
        (None, None, ts(2, 1), -1.0),  # several failures, in contract order
        (8, 10, ts(2, 6), 5.0),  # same order id, different content: both rejected
        (8, 11, ts(2, 7), 6.0),
    ]
    classified = classify_orders(lake_day(rows, date(2024, 1, 2)), run_id="run-1")
    assert classified.column("failed_rules").to_pylist() == [
        [],
        [],
        ["order_id.not_null"],
        ["customer_id.not_null"],
        ["order_ts.not_null"],
        ["order_amount.greater_than"],
        ["order_amount.greater_than"],
        ["order_ts.on_order_date"],
        ["order_id.not_null", "customer_id.not_null", "order_amount.greater_than"],
        ["order_id.unique"],
        ["order_id.unique"],
    ]
    assert classified.column("reject_reason").to_pylist() == [
        None,
        "duplicate",
        "order_id.not_null",
        "customer_id.not_null",
        "order_ts.not_null",
        "order_amount.greater_than",
        "order_amount.greater_than",
        "order_ts.on_order_date",
        "order_id.not_null",
        "order_id.unique",
        "order_id.unique",
    ]
    parts = split_classified(classified)
    assert parts["orders"].num_rows == 1
    assert parts["orders_rejects"].num_rows == 9
    assert set(parts["orders_rejects"].column("run_id").to_pylist()) == {"run-1"}
    assert parts["duplicate"].num_rows == 1
    assert parts["orders"].schema == ORDERS.schema
    # One counted row per rule broken, for the metadata's counts per rule.
    assert {k: v.num_rows for k, v in parts.items() if k.startswith("rule:")} == {
        "rule:order_id.not_null": 2,
        "rule:customer_id.not_null": 2,
        "rule:order_ts.not_null": 1,
        "rule:order_amount.greater_than": 3,
        "rule:order_ts.on_order_date": 1,
        "rule:order_id.unique": 2,
    }


def test_soft_rules_are_counted_but_do_not_reject():
    day = lake_day([(1, 10, ts(2, 5), 10.0)], date(2024, 1, 2))
    day = day.set_column(5, "channel", pa.array(["fax"])).set_column(4, "quantity", pa.array([0], pa.int32()))
    parts = split_classified(classify_orders(day, run_id="run-1"))
    assert parts["orders"].num_rows == 1 and parts["orders_rejects"].num_rows == 0
    assert sorted(k for k in parts if k.startswith("rule:")) == [
        "rule:channel.isin",
        "rule:quantity.greater_than_or_equal_to",
    ]


def test_point_in_time_join_picks_version_valid_at_order_time_and_keeps_orphans():
    dim = pa.table(
        {
            "customer_id": pa.array([1, 1], pa.int64()),
            "valid_from": pa.array([ts(1), ts(2, 12)], pa.timestamp("us", tz="UTC")),
            "name": ["Ada", "Ada"],
            "customer_segment": ["consumer", "enterprise"],
            "country": ["GB", "GB"],
        }
    )
    orders = conform(
        lake_day(
            [
                (1, 1, ts(2, 11), 5.0),  # before the mid-day change
                (2, 1, ts(2, 12), 6.0),  # exactly at it: the new version
                (3, 99, ts(2, 13), 7.0),  # unknown customer
            ],
            date(2024, 1, 2),
        ),
        ORDERS,
    )
    out = join_point_in_time(orders, prepare_dimension(dim)).to_pylist()
    assert [r["order_id"] for r in out] == [1, 2, 3]
    assert [r["customer_segment"] for r in out] == ["consumer", "enterprise", None]
    assert [r["is_orphan"] for r in out] == [False, False, True]


def test_partial_metrics_combine_to_the_same_as_one_pandas_groupby():
    orders = conform(
        lake_day([(i, i % 3, ts(2, i % 24), 1.1 * i) for i in range(1, 40)], date(2024, 1, 2)),
        ORDERS,
    )
    joined = orders.append_column("customer_segment", pa.array(["s"] * orders.num_rows))
    halves = [partial_daily_metrics(joined.slice(0, 17)), partial_daily_metrics(joined.slice(17))]
    out = combine_daily_metrics(pa.concat_tables(halves)).to_pandas()
    expected = (
        joined.to_pandas()
        .groupby(["customer_id"])
        .agg(
            total_spend=("order_amount", "sum"),
            order_count=("order_id", "count"),
            avg_order_value=("order_amount", "mean"),
        )
        .reset_index()
    )
    assert list(out["customer_id"]) == list(expected["customer_id"])
    assert list(out["order_count"]) == list(expected["order_count"])
    pd.testing.assert_series_equal(out["total_spend"], expected["total_spend"], check_names=False, rtol=1e-12)
    pd.testing.assert_series_equal(
        out["avg_order_value"], expected["avg_order_value"], check_names=False, rtol=1e-12
    )


def test_conform_names_the_column_that_does_not_fit():
    bad = lake_day([(1, 1, ts(2), 5.0)], date(2024, 1, 2)).set_column(3, "order_amount", pa.array(["five"]))
    with pytest.raises(ValueError, match=r"orders\.order_amount: cannot cast string"):
        conform(bad, ORDERS)


@pytest.mark.parametrize(
    ("total", "text"),
    [
        (0.1 + 0.2, "0.30"),  # a float sum's error is not a cent
        (-0.0, "0.00"),  # a float zero's sign is no difference from an exact zero
        (None, "0.00"),  # SUM over no amount
        (Decimal("-12.30"), "-12.30"),
        (1234567.891, "1234567.89"),
    ],
)
def test_totals_from_either_system_are_spelled_to_the_cent_alike(total, text):
    assert cents_text(total) == text


@pytest.mark.parametrize("rewrite", [True, False], ids=["rewrite", "merge"])
def test_scd2_reloading_days_changes_nothing(rewrite):
    days = [[(1, ts(1), "a")], [(1, ts(2), "b"), (2, ts(2), "z")], [(1, ts(3), "c")]]
    once = load_days([0, 1, 2], days, rewrite)
    assert load_days([0, 1, 2, 1, 0, 2], days, rewrite).equals(once)


def test_a_load_looks_for_its_own_ids_among_the_loaded_ones():
    """The ids a load compares with the table: every distinct id of its lines, valid or not (a
    superset of the valid lines' ids), and of the loaded ids only those among them."""
    from etl_assets.transforms.events import as_value_set, distinct_event_ids, ids_among

    lines = pa.table({"event_id": ["a", "b", None, "a", "c"], "user_id": [1, None, 2, 1, 3]})
    ids = distinct_event_ids(lines)
    assert sorted(ids.column("event_id").to_pylist()) == ["a", "b", "c"]
    wanted = as_value_set(pa.concat_tables([ids, pa.table({"event_id": ["c", "d"]})]))
    assert sorted(wanted.to_pylist()) == ["a", "b", "c", "d"]
    loaded = pa.table({"event_id": ["z", "c", "a", "y", "a"]})
    assert ids_among(loaded, wanted).column("event_id").to_pylist() == ["c", "a", "a"]
    assert ids_among(loaded, as_value_set(distinct_event_ids(lines.slice(0, 0)))).num_rows == 0
