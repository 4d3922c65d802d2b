"""Dagster resources: the one way to Ray, and the warehouse backend."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import dagster as dg
import ray
from pydantic import Field, PrivateAttr
from ray.data import DataContext, ExecutionResources

from etl_assets.settings import load_settings
from etl_assets.warehouse.base import Warehouse
from etl_assets.warehouse.delta import DeltaWarehouse

RAY_DATA_LOGGER = "ray.data"


def _default_temp_dir() -> str:
    # Ray's socket paths must stay short, so the default lives directly under the system temp dir.
    return os.path.join(tempfile.gettempdir(), f"etl_assets_ray_{os.getuid()}")


class RayResource(dg.ConfigurableResource):
    """Ray for one run.

    With no ``address`` it starts a private local Ray (``address="local"``: never a stray cluster
    found by auto-discovery) with its own temp dir and limits, and shuts it down after the run.
    With an address (``RAY_ADDRESS``) it connects to that cluster and leaves it running. When Ray is
    already initialised in this process (tests share one per session) it uses it and leaves it be.
    """

    address: str | None = Field(
        default_factory=lambda: os.environ.get("RAY_ADDRESS") or None,
        description="Ray cluster to connect to; unset starts a private local Ray for the run.",
    )
    num_cpus: int | None = Field(default=None, description="CPUs of the local Ray (default: all).")
    object_store_memory_mb: int = Field(default=1024, description="Object store cap of the local Ray.")
    temp_dir: str = Field(default_factory=_default_temp_dir, description="Temp dir of the local Ray.")
    data_cpu_limit: float | None = Field(default=None, description="CPUs one Ray Data job may use.")
    data_object_store_limit_mb: int | None = Field(
        default=None, description="Object store bytes one Ray Data job may hold (MiB)."
    )

    _started_here: bool = PrivateAttr(default=False)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        if ray.is_initialized():
            self._started_here = False
        elif self.address:
            ray.init(address=self.address, log_to_driver=False)
            self._started_here = False
        else:
            os.makedirs(self.temp_dir, exist_ok=True)
            ray.init(
                address="local",
                num_cpus=self.num_cpus,
                object_store_memory=self.object_store_memory_mb * 1024 * 1024,
                _temp_dir=self.temp_dir,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
            self._started_here = True
        self._configure_data_context()

    def _configure_data_context(self) -> None:
        ctx = DataContext.get_current()
        # Progress goes to the "ray.data" logger, which dagster.yaml hands to the run's event log.
        ctx.enable_progress_bars = False
        ctx.enable_operator_progress_bars = False
        ctx.verbose_stats_logs = False
        # A task's own exception (a contract violation, an unreadable file) reaches the asset as
        # itself, so it fails the run with its message instead of being retried as a Ray failure.
        ctx.raise_original_map_exception = True
        limits = ExecutionResources(
            cpu=self.data_cpu_limit,
            object_store_memory=(
                self.data_object_store_limit_mb * 1024 * 1024 if self.data_object_store_limit_mb else None
            ),
        )
        ctx.execution_options.resource_limits = limits
        logging.getLogger(RAY_DATA_LOGGER).setLevel(logging.INFO)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._started_here and ray.is_initialized():
            ray.shutdown()
        self._started_here = False


class SourcesResource(dg.ConfigurableResource):
    """Where the sources are: the CRM database URL and the folders of the lake and landing zone."""

    crm_url: str = Field(
        default_factory=lambda: load_settings().crm_url,
        description="CRM database URL (sqlite:///... or postgresql://...); ETL_CRM_URL.",
    )
    data_dir: str = Field(
        default_factory=lambda: str(load_settings().data_dir),
        description="Root of the embedded sources (ETL_DATA_DIR); sources live under sources/.",
    )

    @property
    def orders_lake_dir(self) -> Path:
        return Path(self.data_dir) / "sources" / "lake" / "orders"

    @property
    def events_landing_dir(self) -> Path:
        return Path(self.data_dir) / "sources" / "landing" / "events"


class WarehouseResource(dg.ConfigurableResource):
    """The warehouse backend chosen by ``ETL_WAREHOUSE`` (``delta`` by default)."""

    kind: str = Field(
        default_factory=lambda: load_settings().warehouse, description="delta, snowflake or bigquery"
    )
    root: str = Field(
        default_factory=lambda: str(load_settings().warehouse_dir),
        description="Delta: folder or object-store URI under which each table lives.",
    )

    def backend(self) -> Warehouse:
        if self.kind == "delta":
            return DeltaWarehouse(self.root)
        raise NotImplementedError(f"ETL_WAREHOUSE={self.kind!r}: only the delta backend is built so far")
