"""Change data capture of CRM transactions, on SQLite and (with ETL_TEST_POSTGRES_URL) PostgreSQL."""

import os
import shutil
import sqlite3
import uuid
from datetime import date
from decimal import Decimal

import dagster as dg
import pandas as pd
import psycopg
import pytest

from etl_assets import definitions
from etl_assets.checks.rules import (
    transactions_reconcile_with_source,
    transactions_watermark_monotonic,
)
from etl_assets.resources import RayResource, SourcesResource, WarehouseResource
from etl_assets.sample_changes import apply_crm_changes
from etl_assets.sample_data import SampleSpec, generate
from etl_assets_tests.conftest import read_table

CHECKS = [transactions_reconcile_with_source, transactions_watermark_monotonic]


@pytest.fixture(params=["sqlite", "postgresql"])
def crm_url(request, sample_dir, tmp_path):
    """A CRM the test may change: a copy of the sample's SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        shutil.copy(sample_dir / "sources" / "crm.db", tmp_path / "crm.db")
        yield f"sqlite:///{tmp_path / 'crm.db'}"
        return
    url = os.environ.get("ETL_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("ETL_TEST_POSTGRES_URL is not set: the PostgreSQL CRM tests need a server")
    schema = f"etl_cdc_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    scoped = f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"
    generate(
        SampleSpec(
            out=tmp_path / "pg_sample",
            start=date(2024, 1, 1),
            days=3,
            orders_per_day=600,
            customers=200,
            seed=11,
            crm_url=scoped,
        )
    )
    yield scoped
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


def source_rows(crm_url: str) -> pd.DataFrame:
    query = "SELECT transaction_id, amount, status, updated_at FROM transactions"
    if crm_url.startswith("sqlite"):
        with sqlite3.connect(crm_url.removeprefix("sqlite:///")) as conn:
            rows = conn.execute(query).fetchall()
    else:
        with psycopg.connect(crm_url) as conn:
            rows = conn.execute(query).fetchall()
    frame = pd.DataFrame(rows, columns=["transaction_id", "amount", "status", "updated_at"])
    frame["amount"] = [Decimal(str(a)).quantize(Decimal("0.01")) for a in frame["amount"]]
    frame["updated_at"] = pd.to_datetime(frame["updated_at"], utc=True).dt.as_unit("us")
    return frame.sort_values("transaction_id").reset_index(drop=True)


def warehouse_rows(warehouse) -> pd.DataFrame:
    frame = read_table(warehouse, "transactions")[["transaction_id", "amount", "status", "updated_at"]]
    frame = frame.assign(updated_at=pd.to_datetime(frame["updated_at"], utc=True).dt.as_unit("us"))
    return frame.sort_values("transaction_id").reset_index(drop=True)


def run(crm_url, warehouse, instance, **config):
    result = dg.materialize(
        [definitions.transactions, *CHECKS],
        resources={
            "ray_cluster": RayResource(),
            "sources": SourcesResource(crm_url=crm_url, data_dir=str(warehouse.parent)),
            "warehouse": WarehouseResource(root=str(warehouse)),
        },
        instance=instance,
        run_config={"ops": {"transactions": {"config": config}}} if config else None,
    )
    assert result.success
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"transactions_reconcile_with_source": True, "transactions_watermark_monotonic": True}
    return result.asset_materializations_for_node("transactions")[0].metadata


def test_cdc_first_loads_everything_then_exactly_the_changes(crm_url, tmp_path):
    warehouse = tmp_path / "warehouse"
    instance = dg.DagsterInstance.ephemeral()
    first = run(crm_url, warehouse, instance)
    source = source_rows(crm_url)
    assert first["full_refresh"].value is True
    assert first["rows_read"].value == len(source)
    pd.testing.assert_frame_equal(warehouse_rows(warehouse), source)
    assert pd.Timestamp(first["watermark"].value) == source["updated_at"].max()

    changes = apply_crm_changes(crm_url, seed=5)
    second = run(crm_url, warehouse, instance, overlap_seconds=0)
    assert second["full_refresh"].value is False
    assert second["rows_read"].value == changes.completed + changes.refunded + changes.inserted
    changed = source_rows(crm_url)
    pd.testing.assert_frame_equal(warehouse_rows(warehouse), changed)
    table = read_table(warehouse, "transactions")
    refunds = table[table["status"] == "refunded"]
    assert refunds["is_refund"].all() and (refunds["amount"] < 0).all()
    assert (
        table["transaction_month"] == pd.to_datetime(table["transaction_date"]).dt.strftime("%Y-%m")
    ).all()

    # Nothing new: nothing read (the default overlap re-reads recent rows, which changes nothing).
    quiet = run(crm_url, warehouse, instance, overlap_seconds=0)
    assert quiet["rows_read"].value == 0
    overlapped = run(crm_url, warehouse, instance)
    assert overlapped["rows_read"].value > 0
    pd.testing.assert_frame_equal(warehouse_rows(warehouse), changed)
    assert overlapped["watermark"].value == second["watermark"].value

    refreshed = run(crm_url, warehouse, instance, full_refresh=True)
    assert refreshed["full_refresh"].value is True
    pd.testing.assert_frame_equal(warehouse_rows(warehouse), changed)


def test_postgres_reads_are_sharded_on_the_key_and_lose_nothing(crm_url):
    from etl_assets.sources.crm import CrmDatabase, read_transaction_changes

    if crm_url.startswith("sqlite"):
        pytest.skip("SQLite has no MOD(): its reads run as one task by design")
    ds = read_transaction_changes(CrmDatabase(crm_url), None, shards=3).materialize()
    assert ds.num_blocks() == 3
    ids = sorted(r["transaction_id"] for r in ds.take_all())
    assert ids == source_rows(crm_url)["transaction_id"].tolist()
