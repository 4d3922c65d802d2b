"""CRM reads on SQLite and, where ETL_TEST_POSTGRES_URL is set, on a real PostgreSQL server."""

import os
import sqlite3
import uuid

import dagster as dg
import pandas as pd
import psycopg
import pytest

from etl_assets import definitions
from etl_assets.resources import SourcesResource
from etl_assets.sources.crm import redact
from etl_assets_tests.conftest import SAMPLE_DAYS, day, read_table, resources

CRM_ASSETS = [definitions.raw_customers, definitions.customers]
COLUMNS = ["customer_id", "name", "email", "phone", "customer_segment", "country", "created_at", "updated_at"]


def run_customers(crm_url: str, sample_dir, warehouse, first, last, raise_on_error=True):
    res = resources(sample_dir, warehouse)
    res["sources"] = SourcesResource(crm_url=crm_url, data_dir=str(sample_dir))
    return dg.materialize(
        CRM_ASSETS,
        resources=res,
        tags={
            "dagster/asset_partition_range_start": first.isoformat(),
            "dagster/asset_partition_range_end": last.isoformat(),
        },
        raise_on_error=raise_on_error,
    )


def failure_message(result) -> str:
    return next(
        e for e in result.all_events if e.event_type_value == "STEP_FAILURE"
    ).event_specific_data.error.to_string()


@pytest.fixture
def postgres_crm(sample_dir):
    url = os.environ.get("ETL_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("ETL_TEST_POSTGRES_URL is not set: the PostgreSQL CRM tests need a server")
    schema = f"etl_test_{uuid.uuid4().hex[:8]}"
    with sqlite3.connect(sample_dir / "sources" / "crm.db") as crm:
        rows = crm.execute(f"SELECT {', '.join(COLUMNS)} FROM customers").fetchall()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(
            f"CREATE TABLE {schema}.customers (customer_id BIGINT, name TEXT, email TEXT, phone TEXT,"
            " customer_segment TEXT, country TEXT, created_at TIMESTAMP, updated_at TIMESTAMP)"
        )
        with conn.cursor() as cur:
            cur.executemany(f"INSERT INTO {schema}.customers VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", rows)
    separator = "&" if "?" in url else "?"
    yield f"{url}{separator}options=-csearch_path%3D{schema}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


def test_postgres_crm_gives_the_same_customer_tables_as_sqlite(
    postgres_crm, sample_dir, full_warehouse, tmp_path
):
    warehouse = tmp_path / "warehouse"
    assert run_customers(postgres_crm, sample_dir, warehouse, day(0), day(SAMPLE_DAYS - 1)).success
    for name in ("raw_customers", "customers"):
        got = read_table(warehouse, name)
        want = read_table(full_warehouse, name)
        keys = ["customer_id", "updated_at"]
        pd.testing.assert_frame_equal(
            got[want.columns].sort_values(keys).reset_index(drop=True),
            want.sort_values(keys).reset_index(drop=True),
            check_exact=True,
            obj=name,
        )


def test_unreachable_postgres_fails_naming_the_url_without_its_password(sample_dir, tmp_path):
    url = "postgresql://etl:s3cret@127.0.0.1:1/crm"
    result = run_customers(url, sample_dir, tmp_path / "w", day(0), day(0), raise_on_error=False)
    assert not result.success
    message = failure_message(result)
    assert "CRM database postgresql://etl:***@127.0.0.1:1/crm is unreachable" in message
    assert "s3cret" not in message
    assert redact(url) == "postgresql://etl:***@127.0.0.1:1/crm"


def test_missing_sqlite_file_fails_naming_the_file(sample_dir, tmp_path):
    missing = tmp_path / "nowhere" / "crm.db"
    result = run_customers(
        f"sqlite:///{missing}", sample_dir, tmp_path / "w", day(0), day(0), raise_on_error=False
    )
    assert not result.success
    assert f"file {missing} does not exist" in failure_message(result)


def test_crm_table_missing_a_column_fails_naming_it(sample_dir, tmp_path):
    broken = tmp_path / "crm.db"
    with sqlite3.connect(broken) as conn:
        conn.execute("CREATE TABLE customers (customer_id BIGINT, name TEXT, updated_at TIMESTAMP)")
    result = run_customers(
        f"sqlite:///{broken}", sample_dir, tmp_path / "w", day(0), day(0), raise_on_error=False
    )
    assert not result.success
    assert (
        "table customers lacks column(s) email, phone, customer_segment, country, created_at"
        in failure_message(result)
    )
