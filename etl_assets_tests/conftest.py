"""Shared fixtures: one Ray for the whole session, a generated sample, and a run helper."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import ray
from dagster_gcp import BigQueryResource
from dagster_snowflake import SnowflakeResource

from etl_assets import definitions
from etl_assets.checks import window_reads
from etl_assets.checks.rules import checks_of
from etl_assets.resources import RayResource, SourcesResource, WarehouseResource, start_local_ray
from etl_assets.sample_data import SampleSpec, generate
from etl_assets_tests.emulators.servers import (
    BIGQUERY_PROJECT,
    free_port,
    start_bigquery,
    start_fakesnow,
    start_moto,
)
from etl_assets_tests.warehouse_readers import read_frame

SAMPLE_START = date(2024, 1, 1)
SAMPLE_DAYS = 7
DAILY_ASSETS = [
    definitions.raw_customers,
    definitions.customers,
    definitions.orders_and_rejects,
    definitions.customer_orders,
    definitions.daily_customer_metrics,
]


@pytest.fixture(scope="session", autouse=True)
def ray_session() -> Iterator[None]:
    """One private local Ray for every test, started as ``RayResource`` starts its own (of fixed
    size: Ray Data starts no helper actors on it); the assets' resource finds it and leaves it
    running."""
    temp_dir = tempfile.mkdtemp(prefix="etl_ray_")
    start_local_ray(temp_dir, object_store_mb=512, num_cpus=2)
    # As RayResource sets it, for the tests that run Ray Data directly: a task's own exception
    # reaches the caller as itself.
    ray.data.DataContext.get_current().raise_original_map_exception = True
    yield
    ray.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The embedded-sample layout (``<dir>/sources/...``) at a small size."""
    root = tmp_path_factory.mktemp("sample")
    generate(
        SampleSpec(
            out=root / "sources",
            start=SAMPLE_START,
            days=SAMPLE_DAYS,
            orders_per_day=600,
            customers=200,
            seed=11,
        )
    )
    return root


def day(offset: int) -> date:
    return SAMPLE_START + timedelta(days=offset)


def resources(sample: Path | str, warehouse: Path | WarehouseResource, crm_url: str | None = None) -> dict:
    """Resources for a run: a local Delta folder or any configured warehouse; sources in a folder
    (or an object-store URI, with the CRM named apart)."""
    return {
        "ray_cluster": RayResource(),
        "sources": SourcesResource(
            crm_url=crm_url or f"sqlite:///{Path(sample) / 'sources' / 'crm.db'}", data_dir=str(sample)
        ),
        "warehouse": (
            warehouse if isinstance(warehouse, WarehouseResource) else WarehouseResource(root=str(warehouse))
        ),
    }


def run_window(
    sample: Path | str,
    warehouse: Path | WarehouseResource,
    first: date,
    last: date,
    assets=None,
    with_checks: bool = True,
    raise_on_error: bool = True,
    crm_url: str | None = None,
) -> dg.ExecuteInProcessResult:
    """Materialize ``assets`` (default: the whole daily pipeline) for ``first..last`` in one run."""
    selected = list(assets or DAILY_ASSETS)
    return dg.materialize(
        selected + (checks_of(selected) if with_checks else []),
        resources=resources(sample, warehouse, crm_url),
        tags={
            "dagster/asset_partition_range_start": first.isoformat(),
            "dagster/asset_partition_range_end": last.isoformat(),
        },
        selection=dg.AssetSelection.assets(*selected) if not with_checks else None,
        raise_on_error=raise_on_error,
    )


def read_table(warehouse: Path | WarehouseResource, name: str) -> pd.DataFrame:
    """A whole warehouse table, through the warehouse's own client rather than the platform's reader.

    List columns (the rejects' ``failed_rules``) come back as tuples, so frames can be sorted."""
    return read_frame(warehouse, name)


# Which run wrote a rejected row: the one column a rerun changes on purpose.
PROVENANCE = ["run_id"]


@pytest.fixture(scope="session")
def full_warehouse(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole sample loaded in one 7-day run, checks included. Read-only for tests."""
    warehouse = tmp_path_factory.mktemp("warehouse_full")
    result = run_window(sample_dir, warehouse, day(0), day(SAMPLE_DAYS - 1))
    assert result.success
    return warehouse


@pytest.fixture
def env_without_ray_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)


def pytest_configure(config: pytest.Config) -> None:
    # Keep Ray from reporting usage stats from test runs.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # S3 is a local moto server (started by the ``s3`` fixture). Its endpoint and credentials are
    # in the environment before Ray starts, so Ray workers reach it exactly as the driver does.
    os.environ.update(
        {
            "ETL_TEST_MOTO_PORT": str(MOTO_PORT),
            "AWS_ENDPOINT_URL": f"http://127.0.0.1:{MOTO_PORT}",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",
            # One writer per table at a time (the runs' pool), so no lock provider is needed.
            "AWS_S3_ALLOW_UNSAFE_RENAME": "true",
        }
    )


MOTO_PORT = free_port()


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A bucket on a local S3 server (moto); yields its s3:// URI."""
    server = start_moto(tmp_path_factory.mktemp("moto"), MOTO_PORT)
    import boto3

    boto3.client("s3").create_bucket(Bucket="etl-test")
    yield "s3://etl-test"
    server.stop()


@pytest.fixture(scope="session")
def fakesnow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A fakesnow server that every process (Ray workers too) shares; yields its port."""
    server = start_fakesnow(tmp_path_factory.mktemp("fakesnow"))
    yield server.port
    server.stop()


@pytest.fixture(scope="session")
def bigquery_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The BigQuery emulator; yields its API endpoint."""
    server = start_bigquery(tmp_path_factory.mktemp("bqemulator"))
    yield f"http://127.0.0.1:{server.port}"
    server.stop()


WAREHOUSE_KINDS = ["delta", "snowflake", "bigquery", "delta_s3"]


def warehouse_on(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path, name: str | None = None
) -> WarehouseResource:
    """A fresh, private warehouse of ``kind`` (or the one called ``name``): a local Delta folder, a
    fakesnow database, a BigQuery emulator dataset, or a Delta prefix in the moto S3 bucket."""
    name = name or f"t{uuid.uuid4().hex[:10]}"
    if kind == "snowflake":
        return WarehouseResource(
            kind="snowflake",
            snowflake=SnowflakeResource(
                account="fakesnow",
                user="fake",
                password="snow",
                database=name.upper(),
                schema="PUBLIC",
                network_timeout=120,
                additional_snowflake_connection_args={
                    "host": "127.0.0.1",
                    "port": request.getfixturevalue("fakesnow"),
                    "protocol": "http",
                    "session_parameters": {"CLIENT_OUT_OF_BAND_TELEMETRY_ENABLED": False},
                },
            ),
        )
    if kind == "bigquery":
        return WarehouseResource(
            kind="bigquery",
            bigquery=BigQueryResource(project=BIGQUERY_PROJECT),
            bigquery_dataset=name,
            bigquery_endpoint=request.getfixturevalue("bigquery_emulator"),
        )
    if kind == "delta_s3":
        return WarehouseResource(kind="delta", root=f"{request.getfixturevalue('s3')}/{name}/warehouse")
    return WarehouseResource(kind="delta", root=str(tmp_path / name))


def judge_windows_in_ray(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Has every check judge its window in Ray tasks, as a window of more than ``LOCAL_ROWS`` rows
    is; returns the list of the Ray steps the checks then use (``map_blocks``, ``co_locate``)."""
    through_ray: list[str] = []
    monkeypatch.setattr(window_reads, "LOCAL_ROWS", 0)
    for name in ("map_blocks", "co_locate"):
        real = getattr(window_reads, name)

        def spy(*args, _real=real, _name=name, **kwargs):
            through_ray.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(window_reads, name, spy)
    return through_ray


@pytest.fixture(params=["in_ray", "in_driver"])
def checks_path(request, monkeypatch) -> Iterator[str]:
    """Runs a check test twice: with every window judged in Ray, as a day of more than
    ``LOCAL_ROWS`` rows is (and fails the test if no check went through Ray), and as the small
    sample's windows are, in the driver."""
    through_ray = judge_windows_in_ray(monkeypatch) if request.param == "in_ray" else []
    yield request.param
    if request.param == "in_ray":
        assert through_ray, "no window went through Ray"
