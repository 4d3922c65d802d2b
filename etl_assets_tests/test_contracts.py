"""Every rule of every contract, shown passing on a good row and failing on a crafted bad one."""

from datetime import UTC, date, datetime
from decimal import Decimal

import pyarrow as pa
import pytest

from etl_assets.assets.metadata import column_schema
from etl_assets.contracts import ALL_TABLES, EVENT_LINES, ORDERS, TableContract, conform
from etl_assets.contracts.drift import schema_drift
from etl_assets.contracts.validation import ContractViolation, enforce, judge_rows

T0 = datetime(2024, 1, 2, 10, 30, tzinfo=UTC)
T1 = datetime(2024, 1, 3, 8, 0, tzinfo=UTC)
DAY = date(2024, 1, 2)

CUSTOMER = {
    "customer_id": 1,
    "name": "Ada",
    "email": "ada@example.com",
    "phone": "441234",
    "customer_segment": "consumer",
    "country": "GB",
    "created_at": T0,
    "updated_at": T0,
}
ORDER = {
    "order_id": 7,
    "customer_id": 1,
    "order_ts": T0,
    "order_amount": 12.5,
    "quantity": 2,
    "channel": "web",
    "order_date": DAY,
}
GOOD = {
    "raw_customers": {**CUSTOMER, "updated_date": DAY},
    "customers": {**CUSTOMER, "valid_from": T0, "valid_to": T1, "is_current": False},
    "orders": ORDER,
    "orders_rejects": {
        **ORDER,
        "reject_reason": "order_id.not_null",
        "failed_rules": ["order_id.not_null"],
        "run_id": "r",
    },
    "customer_orders": {
        **ORDER,
        "customer_name": "Ada",
        "customer_segment": "consumer",
        "country": "GB",
        "customer_valid_from": T0,
        "is_orphan": False,
    },
    "daily_customer_metrics": {
        "metric_date": DAY,
        "customer_id": 1,
        "customer_segment": "consumer",
        "total_spend": 30.0,
        "order_count": 3,
        "avg_order_value": 10.0,
    },
    "events_landing": {
        "event_id": "e-1",
        "user_id": 1,
        "event_type": "click",
        "timestamp": "2024-01-02T10:30:00Z",
        "session_duration": 3.5,
    },
    "events": {
        "event_id": "e-1",
        "user_id": 1,
        "event_type": "click",
        "timestamp": T0,
        "session_duration": 3.5,
        "event_hour": datetime(2024, 1, 2, 10, tzinfo=UTC),
        "day_of_week": 1,
        "is_weekend": False,
        "source_file": "part-1.jsonl",
        "line_number": 1,
        "batch_id": "b1",
    },
    "events_rejects": {
        "source_file": "part-1.jsonl",
        "line_number": 2,
        "raw_line": "{",
        "reject_reason": "malformed_json",
        "failed_rules": ["malformed_json"],
        "run_id": "r",
        "batch_id": "b1",
    },
    "hourly_user_metrics": {
        "event_hour": datetime(2024, 1, 2, 10, tzinfo=UTC),
        "user_id": 1,
        "event_count": 2,
        "total_session_duration": 7.0,
        "avg_session_duration": 3.5,
    },
    "transactions": {
        "transaction_id": 5,
        "customer_id": 1,
        "amount": Decimal("-4.20"),
        "currency": "EUR",
        "transaction_date": DAY,
        "status": "refunded",
        "updated_at": T0,
        "transaction_month": "2024-01",
        "is_refund": True,
        "processed_at": T1,
    },
}

# For each rule that is not a plain not-null or key rule: a change to the good row that breaks it.
BREAKERS = {
    "email.str_matches": {"email": "ada at example"},
    "phone.str_matches": {"phone": "+44 1234"},
    "customer_segment.isin": {"customer_segment": "gold"},
    "country.str_matches": {"country": "Britain"},
    "updated_date.is_day_of_updated_at": {"updated_date": date(2024, 1, 5)},
    "valid_from.is_updated_at": {"valid_from": T1, "valid_to": datetime(2024, 1, 4, tzinfo=UTC)},
    "valid_to.after_valid_from": {"valid_to": T0},
    "is_current.iff_open": {"is_current": True},
    "order_amount.greater_than": {"order_amount": 0.0},
    "quantity.greater_than_or_equal_to": {"quantity": 0},
    "channel.isin": {"channel": "fax"},
    "order_ts.on_order_date": {"order_date": date(2024, 1, 1)},
    "customer_valid_from.not_after_order_ts": {"customer_valid_from": T1},
    "is_orphan.iff_no_customer_version": {"is_orphan": True},
    "total_spend.greater_than_or_equal_to": {"total_spend": -30.0, "avg_order_value": -10.0},
    "order_count.greater_than_or_equal_to": {"order_count": 0},
    "avg_order_value.greater_than_or_equal_to": {"avg_order_value": -10.0, "total_spend": -30.0},
    "avg_order_value.is_total_over_count": {"avg_order_value": 11.0},
    "event_id.str_contains": {"event_id": "   "},
    "event_type.str_contains": {"event_type": ""},
    "timestamp.str_matches": {"timestamp": "2024-01-02 10:30:00"},
    "session_duration.greater_than_or_equal_to": {"session_duration": -1.0},
    "day_of_week.in_range": {"day_of_week": 7, "is_weekend": True},
    "event_hour.is_hour_of_timestamp": {"event_hour": T0},
    "is_weekend.iff_saturday_or_sunday": {"is_weekend": True},
    "line_number.greater_than_or_equal_to": {"line_number": 0},
    "event_count.greater_than_or_equal_to": {"event_count": 0},
    "total_session_duration.greater_than_or_equal_to": {"total_session_duration": -1.0},
    "avg_session_duration.greater_than_or_equal_to": {"avg_session_duration": -1.0},
    "currency.isin": {"currency": "XXX"},
    "status.isin": {"status": "lost"},
    "transaction_month.str_matches": {"transaction_month": "2024/01"},
    "is_refund.iff_negative_amount": {"is_refund": False},
}

CONTRACTS = {c.name: c for c in (*ALL_TABLES, EVENT_LINES)}
RULES = [(c, r) for c in CONTRACTS.values() for r in c.rules]


def table_of(contract: TableContract, rows: list[dict]) -> pa.Table:
    loose = pa.schema([f.with_nullable(True) for f in contract.schema])
    return conform(pa.Table.from_pylist(rows, schema=loose), contract, nulls_allowed=True)


@pytest.mark.parametrize("contract", CONTRACTS.values(), ids=list(CONTRACTS))
def test_the_good_row_keeps_every_rule(contract):
    verdicts = judge_rows(table_of(contract, [GOOD[contract.name]]), contract)
    assert verdicts.rejecting.to_pylist() == [[]]
    assert verdicts.soft.to_pylist() == [[]]


@pytest.mark.parametrize("contract,rule", RULES, ids=[f"{c.name}:{r.code}" for c, r in RULES])
def test_each_rule_fails_on_crafted_bad_input(contract, rule):
    good = GOOD[contract.name]
    if rule.code == contract.key_rule_code:
        rows = [good, good]  # two rows with one key
    elif rule.code.endswith(".not_null"):
        rows = [{**good, rule.column: None}]
    else:
        assert rule.code in BREAKERS, f"no crafted bad input for {contract.name} rule {rule.code}"
        rows = [{**good, **BREAKERS[rule.code]}]
    verdicts = judge_rows(table_of(contract, rows), contract)
    found = verdicts.rejecting if rule.rejects else verdicts.soft
    assert all(rule.code in codes for codes in found.to_pylist()), found.to_pylist()
    other = verdicts.soft if rule.rejects else verdicts.rejecting
    assert all(rule.code not in codes for codes in other.to_pylist())


def test_the_writer_refuses_rows_that_break_a_rejecting_rule_and_names_it():
    rows = [ORDER, {**ORDER, "order_id": 8, "order_amount": -1.0}]
    with pytest.raises(ContractViolation, match=r"orders: .*order_amount\.greater_than \(1 rows\)"):
        enforce(table_of(ORDERS, rows), ORDERS)
    # A soft rule does not stop the write.
    assert enforce(table_of(ORDERS, [{**ORDER, "channel": "fax"}]), ORDERS).num_rows == 1
    # Nor does a key seen twice in one block: a block is not a partition (the key checks judge that).
    assert enforce(table_of(ORDERS, [ORDER, ORDER]), ORDERS).num_rows == 2


def test_contract_is_the_source_of_the_column_schema_shown_in_the_ui():
    shown = {c.name: c for c in column_schema(ORDERS).columns}
    assert list(shown) == ORDERS.column_names
    assert shown["order_amount"].description == "order amount, > 0"
    assert shown["order_amount"].constraints.nullable is False
    assert any(o.startswith("order_amount.greater_than") for o in shown["order_amount"].constraints.other)
    assert shown["order_id"].constraints.unique is True


def test_schema_drift_names_the_column_and_both_types():
    found = pa.schema([("order_id", pa.int32()), ("customer_id", pa.int64()), ("extra", pa.string())])
    wanted = pa.schema([("order_id", pa.int64()), ("customer_id", pa.int64()), ("order_ts", pa.date32())])
    drift = schema_drift(found, wanted)
    assert drift.breaking
    assert "column order_id is int32, expected int64" in drift.describe()
    assert "column order_ts (date32[day]) is missing" in drift.describe()
    assert drift.added == (("extra", pa.string()),)
    # Large strings, as Delta hands them back, are the same type.
    assert not schema_drift(pa.schema([("s", pa.large_string())]), pa.schema([("s", pa.string())])).breaking
