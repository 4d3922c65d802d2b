"""Shared fixtures: one Ray for the whole session, a generated sample, and a run helper."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest
import ray
from deltalake import DeltaTable

from etl_assets import definitions
from etl_assets.checks.rules import CHECKS
from etl_assets.resources import RayResource, SourcesResource, WarehouseResource
from etl_assets.sample_data import SampleSpec, generate

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
    """One private local Ray for every test; the assets' resource finds it and leaves it running."""
    temp_dir = tempfile.mkdtemp(prefix="etl_ray_")
    ray.init(
        address="local",
        num_cpus=2,
        object_store_memory=512 * 1024 * 1024,
        _temp_dir=temp_dir,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
    )
    # As RayResource sets it: a task's own exception reaches the caller as itself.
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


def resources(sample: Path, warehouse: Path) -> dict:
    return {
        "ray_cluster": RayResource(),
        "sources": SourcesResource(
            crm_url=f"sqlite:///{sample / 'sources' / 'crm.db'}", data_dir=str(sample)
        ),
        "warehouse": WarehouseResource(root=str(warehouse)),
    }


def checks_on(assets: list) -> list:
    """The platform's checks that target one of ``assets``."""
    keys = {key for a in assets for key in a.keys}
    return [c for c in CHECKS if any(k.asset_key in keys for k in c.check_keys)]


def run_window(
    sample: Path,
    warehouse: Path,
    first: date,
    last: date,
    assets=None,
    with_checks: bool = True,
    raise_on_error: bool = True,
) -> dg.ExecuteInProcessResult:
    """Materialize ``assets`` (default: the whole daily pipeline) for ``first..last`` in one run."""
    selected = list(assets or DAILY_ASSETS)
    return dg.materialize(
        selected + (checks_on(selected) if with_checks else []),
        resources=resources(sample, warehouse),
        tags={
            "dagster/asset_partition_range_start": first.isoformat(),
            "dagster/asset_partition_range_end": last.isoformat(),
        },
        selection=dg.AssetSelection.assets(*selected) if not with_checks else None,
        raise_on_error=raise_on_error,
    )


def read_table(warehouse: Path, name: str) -> pd.DataFrame:
    """A whole warehouse table, through deltalake rather than the platform's own reader.

    List columns (the rejects' ``failed_rules``) come back as tuples, so frames can be sorted."""
    frame = DeltaTable(str(warehouse / name)).to_pyarrow_table().to_pandas()
    for column in frame.columns:
        if frame[column].map(lambda v: hasattr(v, "__len__") and not isinstance(v, str)).any():
            frame[column] = frame[column].map(tuple)
    return frame


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
