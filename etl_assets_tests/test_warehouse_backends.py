"""Every asset, unchanged, on Snowflake (fakesnow), BigQuery (bqemulator) and Delta on S3 (moto).

The same assertions the Delta tests make: each table equals the independent DuckDB computation,
rerunning a partition changes nothing, a range replace equals the first load, merges (customers,
hourly metrics, transactions) are idempotent and order-independent. The S3 run also reads its
orders lake and landing zone from the bucket.
"""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow.fs as pafs
import pytest

from etl_assets import definitions
from etl_assets.checks.rules import check_named
from etl_assets.contracts import ALL_TABLES
from etl_assets.sample_changes import apply_crm_changes
from etl_assets.sample_data import SampleSpec, generate
from etl_assets_tests import expected
from etl_assets_tests.conftest import (
    PROVENANCE,
    judge_windows_in_ray,
    read_table,
    resources,
    run_window,
    warehouse_on,
)
from etl_assets_tests.test_events import expected_hourly, sorted_hourly
from etl_assets_tests.test_pipeline import assert_same_table
from etl_assets_tests.test_transactions import source_rows, warehouse_rows

BACKENDS = ["snowflake", "bigquery", "delta_s3"]
START = date(2024, 3, 1)
DAYS = 3
KEYS = {
    "raw_customers": ["customer_id", "updated_at"],
    "customers": ["customer_id", "valid_from"],
    "orders": ["order_id"],
    "customer_orders": ["order_id"],
    "daily_customer_metrics": ["metric_date", "customer_id", "customer_segment"],
}
CONTRACTS = {c.name: c for c in ALL_TABLES}


def day(offset: int) -> date:
    return START + pd.Timedelta(days=offset).to_pytimedelta()


@pytest.fixture(scope="module")
def small_sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("backend_sample")
    generate(
        SampleSpec(out=root / "sources", start=START, days=DAYS, orders_per_day=300, customers=120, seed=23)
    )
    return root


class Backend:
    """One test's private place on a backend: the warehouse, and where its sources are read from."""

    def __init__(self, kind: str, request: pytest.FixtureRequest, sample: Path, tmp_path: Path):
        self.kind = kind
        self.data_dir: str = str(sample)
        shutil.copy(sample / "sources" / "crm.db", tmp_path / "crm.db")
        self.crm_url = f"sqlite:///{tmp_path / 'crm.db'}"
        self.warehouse = warehouse_on(kind, request, tmp_path)
        if kind == "delta_s3":
            # The lake and the landing zone are read from the bucket too.
            self.data_dir = self.warehouse.root.removesuffix("/warehouse")
            fs, base = pafs.FileSystem.from_uri(self.data_dir)
            for folder in ("lake", "landing"):
                pafs.copy_files(
                    str(sample / "sources" / folder),
                    f"{base}/sources/{folder}",
                    source_filesystem=pafs.LocalFileSystem(),
                    destination_filesystem=fs,
                )

    def run(self, first: date, last: date, with_checks: bool = False) -> dg.ExecuteInProcessResult:
        return run_window(
            self.data_dir, self.warehouse, first, last, with_checks=with_checks, crm_url=self.crm_url
        )

    def resources(self) -> dict:
        return resources(self.data_dir, self.warehouse, self.crm_url)

    def table(self, name: str) -> pd.DataFrame:
        return read_table(self.warehouse, name)

    def snapshot(self, names: list[str]) -> dict[str, pd.DataFrame]:
        out = {}
        for name in names:
            columns = [c for c in CONTRACTS[name].column_names if c not in PROVENANCE]
            frame = self.table(name)[columns]
            out[name] = frame.sort_values(columns).reset_index(drop=True)
        return out


@pytest.fixture(params=BACKENDS)
def backend(request, small_sample, tmp_path) -> Backend:
    return Backend(request.param, request, small_sample, tmp_path)


# Checks whose figures come from the stored rows alone (not from earlier materializations).
READ_ROWS = ("_contract_rules", "_key_unique", "_orphans", "_reconcile", "_version")


def row_verdicts(result: dg.ExecuteInProcessResult) -> dict:
    return {
        (e.check_name, e.partition): (e.passed, {k: v.value for k, v in e.metadata.items()})
        for e in result.get_asset_check_evaluations()
        if e.check_name.endswith(READ_ROWS)
    }


def test_daily_pipeline_equals_duckdb_and_reruns_change_nothing(backend, small_sample, monkeypatch):
    first = backend.run(day(0), day(DAYS - 1), with_checks=True)
    assert first.success
    failed = sorted(e.check_name for e in first.get_asset_check_evaluations() if not e.passed)
    assert failed == [], failed
    # The same window again with every check judging its rows in Ray tasks, as a big day's checks
    # do (the sample's windows are small enough for the driver): the same verdicts and figures.
    through_ray = judge_windows_in_ray(monkeypatch)
    again = backend.run(day(0), day(DAYS - 1), with_checks=True)
    assert {"map_blocks", "co_locate"} <= set(through_ray)
    assert row_verdicts(again) == row_verdicts(first) and len(row_verdicts(first)) > 20
    monkeypatch.undo()

    duck = expected.connect(small_sample)
    for name, keys in KEYS.items():
        wanted = expected.table(duck, name)
        assert len(wanted) > 0
        assert_same_table(backend.table(name), wanted, keys, CONTRACTS[name].column_names)
    rejects = backend.table("orders_rejects")
    assert len(rejects) == len(expected.table(duck, "orders_rejects")) > 0
    assert all(reason == rules[0] for reason, rules in zip(rejects["reject_reason"], rejects["failed_rules"]))

    before = backend.snapshot(expected.DAILY_TABLES)
    assert backend.run(day(1), day(1)).success
    rerun = backend.snapshot(expected.DAILY_TABLES)
    assert backend.run(day(0), day(1)).success
    ranged = backend.snapshot(expected.DAILY_TABLES)
    for name in expected.DAILY_TABLES:
        pd.testing.assert_frame_equal(before[name], rerun[name], check_exact=True, obj=f"rerun {name}")
        pd.testing.assert_frame_equal(before[name], ranged[name], check_exact=True, obj=f"range {name}")


def test_merges_are_idempotent_and_order_independent(backend, small_sample, monkeypatch):
    instance = dg.DagsterInstance.ephemeral()
    batches = sorted(p.name for p in (small_sample / "sources" / "landing" / "events").iterdir())[:3]
    instance.add_dynamic_partitions("event_batches", batches)
    assets = [definitions.events_and_rejects, definitions.hourly_user_metrics]
    # Out of order, and the first batch delivered twice: the aggregate over all of them, once.
    for batch_id in [batches[2], batches[0], batches[1], batches[0]]:
        result = dg.materialize(
            assets, partition_key=batch_id, resources=backend.resources(), instance=instance
        )
        assert result.success
    wanted = expected_hourly(small_sample, batches)
    actual = sorted_hourly(backend.table("hourly_user_metrics"))[wanted.columns]
    pd.testing.assert_frame_equal(actual, sorted_hourly(wanted), check_dtype=False)
    events = backend.table("events")
    assert events["event_id"].is_unique and set(events["batch_id"]) == set(batches)

    # Change data capture: a full first load, then exactly the changes, merged by key.
    transactions = [definitions.transactions]
    assert dg.materialize(transactions, resources=backend.resources(), instance=instance).success
    pd.testing.assert_frame_equal(warehouse_rows(backend.warehouse), source_rows(backend.crm_url))
    apply_crm_changes(backend.crm_url, seed=5)
    # With the reconciliation against the CRM, its sums taken in Ray tasks as a big table's are.
    through_ray = judge_windows_in_ray(monkeypatch)
    reconcile = check_named("transactions_reconcile_with_source")
    result = dg.materialize([*transactions, reconcile], resources=backend.resources(), instance=instance)
    assert result.success and "map_blocks" in through_ray
    pd.testing.assert_frame_equal(warehouse_rows(backend.warehouse), source_rows(backend.crm_url))
    (reconciled,) = result.get_asset_check_evaluations()
    assert reconciled.passed, reconciled.metadata["differences"].value
