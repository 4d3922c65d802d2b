"""Dagster resources: the one way to Ray, and the warehouse backend."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from contextlib import suppress
from typing import TYPE_CHECKING, Literal

import dagster as dg
import ray
from pydantic import Field, PrivateAttr
from ray.data import DataContext, ExecutionResources
from ray.data._internal.execution.resource_manager import ResourceManager

from etl_assets import storage
from etl_assets.dashboard_agent_standin import standin_for_dashboard_agent
from etl_assets.fixed_size_ray import declares_fixed_size, treat_as_fixed_size
from etl_assets.ray_cluster import spill_settings
from etl_assets.ray_steps import cluster_cpus
from etl_assets.settings import load_settings
from etl_assets.warehouse.base import Warehouse
from etl_assets.warehouse.delta import DeltaWarehouse

# The cloud clients (dagster-snowflake, dagster-gcp and what they pull in) take seconds to import;
# they are imported only when their warehouse is chosen, so every run does not pay for them.
if TYPE_CHECKING:
    from dagster_gcp import BigQueryResource
    from dagster_snowflake import SnowflakeResource

RAY_DATA_LOGGER = "ray.data"


def _default_temp_dir() -> str:
    # Ray's socket paths must stay short, so the default lives directly under the system temp dir.
    return os.path.join(tempfile.gettempdir(), f"etl_assets_ray_{os.getuid()}")


WARM_WORKERS = 8

# The step keys (op names) of the platform's checks, which ``etl_assets.checks`` adds: a run of
# these alone, as the UI's "Execute check" launches, starts Ray only when a check needs it, for a
# window of more than ``window_reads.LOCAL_ROWS`` rows; a small window is judged in the driver.
CHECK_STEPS: set[str] = set()


@ray.remote(num_cpus=1)
def _warm_worker() -> None:
    # The modules every task of the assets needs (pandera, polars, pyarrow, the contracts).
    import etl_assets.sources.orders_lake  # noqa: F401
    import etl_assets.transforms.customer_orders  # noqa: F401
    import etl_assets.warehouse.delta  # noqa: F401


def start_local_ray(
    temp_dir: str,
    object_store_mb: int,
    spill_workers: int | None = None,
    num_cpus: int | None = None,
    configure_logging: bool = False,
) -> None:
    """Start a private local Ray (``address="local"``: never a stray cluster found by
    auto-discovery) in ``temp_dir``, without the dashboard and without the helpers a run has no
    use for (``_stop_idle_helpers``; the minimal dashboard agent's stand-in,
    ``dashboard_agent_standin``), marked as of fixed size so that Ray Data starts no helper actors
    on it (``fixed_size_ray``). ``RayResource`` starts its private Ray with it, the tests theirs
    and the benchmarks theirs."""
    with standin_for_dashboard_agent():
        ray.init(
            address="local",
            num_cpus=num_cpus,
            object_store_memory=object_store_mb * 1024 * 1024,
            _temp_dir=temp_dir,
            include_dashboard=False,
            log_to_driver=False,
            configure_logging=configure_logging,
            _system_config=spill_settings(spill_workers),
        )
    _stop_idle_helpers()
    treat_as_fixed_size()


def _stop_idle_helpers() -> None:
    """Stop the private Ray's autoscaler monitor, log monitor and API server as soon as it has started.

    A one-machine Ray has nothing to autoscale (without the monitor, ``ray status`` has nothing to
    show either). The log monitor publishes the workers' output for drivers started with
    ``log_to_driver``; ``start_local_ray`` starts Ray without it, and the workers still write
    their logs to the session's files (should it ever turn it on, the log monitor must stay).
    The API server (``dashboard.py``, minimal without the dashboard) serves Ray's job-submission
    and state APIs (``ray job``, ``ray list``), which nobody reaches on a Ray private to one run.
    Each is a Python process of about 90-110 MiB for the whole run. The monitor also cost every
    run a second at ``ray.shutdown``, which waits that long for it after SIGTERM (its handler
    tries to reach the GCS, stopped just before). ``ray.init`` has no switch to leave them out
    (``ray start`` has ``--no-monitor``, ``--include-log-monitor`` and, for the API server, none).
    Ray's own ``Node`` methods kill them and forget them, on the private ``_global_node``; ray is
    pinned to 2.60, and should a later Ray drop those, this stops nothing and a run holds them
    again.
    """
    node = getattr(ray._private.worker, "_global_node", None)
    for kill in ("kill_monitor", "kill_log_monitor", "kill_dashboard"):
        with suppress(AttributeError, OSError):
            getattr(node, kill)(check_alive=False)


# How often a Dataset execution asks again which resources it may use (Ray's default: 1 s).
DATA_LIMITS_REFRESH_SECONDS = 0.01


def learn_data_limits_sooner() -> None:
    """Let each Ray Data execution in this process use every CPU within a scheduling pass of its
    start (about 0.1 s), not after a second.

    In Ray 2.60 an execution learns the CPUs it may use from Ray Data's autoscaling coordinator
    actor, asynchronously: its first answer is always "none" (the reply is still on its way) and
    it asks again only ``GLOBAL_LIMITS_UPDATE_INTERVAL_S`` (1 s) later. Until then it runs one task
    at a time, so every execution shorter than a second ran on one core: nearly all of a daily
    run's. Asking every 10 ms keeps at most one small actor call in flight. No public setting does
    this (explicit ``resource_limits`` are capped by the same answer); ray is pinned to 2.60, and
    should a later Ray drop the attribute, this sets an unused one and executions start slower.
    It matters on a Ray this process only connected to (``RAY_ADDRESS``): on one it started, of
    fixed size, executions read the CPUs at once and ask no coordinator (``fixed_size_ray``).
    """
    ResourceManager.GLOBAL_LIMITS_UPDATE_INTERVAL_S = DATA_LIMITS_REFRESH_SECONDS


class RayResource(dg.ConfigurableResource):
    """Ray for one run.

    With no ``address`` it starts a private local Ray (``address="local"``: never a stray cluster
    found by auto-discovery) with its own temp dir and limits, and shuts it down after the run.
    With an address (``RAY_ADDRESS``) it connects to that cluster and leaves it running. When Ray is
    already initialised in this process (tests share one per session) it uses it and leaves it be.
    A run of the platform's checks alone (``CHECK_STEPS``) starts or connects only when a check's
    window is too big for the driver (``ensure_started``).
    """

    address: str | None = Field(
        default_factory=lambda: os.environ.get("RAY_ADDRESS") or None,
        description="Ray cluster to connect to; unset starts a private local Ray for the run.",
    )
    num_cpus: int | None = Field(default=None, description="CPUs of the local Ray (default: all).")
    object_store_memory_mb: int = Field(default=1024, description="Object store cap of the local Ray.")
    spill_workers: int | None = Field(
        default=None,
        ge=1,
        description="Most processes the local Ray runs to spill objects to disk, and as many to "
        "restore them (Ray's max_io_workers; unset: Ray's default, 4). Each maps the object store.",
    )
    temp_dir: str = Field(default_factory=_default_temp_dir, description="Temp dir of the local Ray.")
    data_cpu_limit: float | None = Field(default=None, description="CPUs one Ray Data job may use.")
    data_object_store_limit_mb: int | None = Field(
        default=None, description="Object store bytes one Ray Data job may hold (MiB)."
    )

    # The Ray this run opened and must close at teardown: one it started, or one it connected to.
    _opened: Literal["private", "connected"] | None = PrivateAttr(default=None)
    _ready: bool = PrivateAttr(default=False)
    _log: dg.DagsterLogManager | None = PrivateAttr(default=None)
    _warming: list = PrivateAttr(default_factory=list)

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        self._opened, self._ready, self._log = None, False, context.log
        steps = context.dagster_run.step_keys_to_execute if context.dagster_run else None
        if steps and CHECK_STEPS.issuperset(steps):
            context.log.info("ray_cluster: a run of checks only, Ray starts if a check needs it")
            return
        self.ensure_started()

    def ensure_started(self) -> None:
        """Start Ray or connect to it, once per run (a run of checks alone: when one needs it)."""
        if self._ready:
            return
        start = time.perf_counter()
        if ray.is_initialized():
            pass  # the tests' shared Ray: used, never closed here
        elif self.address:
            ray.init(address=self.address, log_to_driver=False)
            self._opened = "connected"
            if declares_fixed_size():  # the persistent local Ray (``make ray-up``)
                treat_as_fixed_size()
        else:
            os.makedirs(self.temp_dir, exist_ok=True)
            start_local_ray(self.temp_dir, self.object_store_memory_mb, self.spill_workers, self.num_cpus)
            self._opened = "private"
        self._configure_data_context()
        self._prestart_workers()
        self._ready = True
        how = {"private": "started a private local Ray", "connected": "connected to Ray"}.get(
            self._opened, "uses the Ray already running in this process"
        )
        if self._log is not None:
            self._log.info(f"ray_cluster: {how} in {time.perf_counter() - start:.2f} s")

    def _prestart_workers(self) -> None:
        """Start and warm one worker per CPU now, without waiting for them.

        Worker processes belong to one job (one run's driver): every run starts its own, and each
        pays for its imports on its first task, about two seconds here. Warming them while Dagster
        prepares the first step takes that off the run's wall time; Ray Data's tasks reuse them.
        """
        # A few at most: on a big cluster Ray Data starts the rest as it needs them.
        self._warming = [_warm_worker.remote() for _ in range(min(cluster_cpus(), WARM_WORKERS))]

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
        learn_data_limits_sooner()
        logging.getLogger(RAY_DATA_LOGGER).setLevel(logging.INFO)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self._warming, self._ready = [], False
        # Disconnecting here rather than leaving it to Ray's exit hook saves a run half a second:
        # that hook sleeps 0.5 s first. A cluster this resource only connected to keeps running.
        if self._opened and ray.is_initialized():
            ray.shutdown()
        self._opened = None


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
    def orders_lake_dir(self) -> str:
        return storage.join(self.data_dir, "sources", "lake", "orders")

    @property
    def events_landing_dir(self) -> str:
        return storage.join(self.data_dir, "sources", "landing", "events")


class WarehouseResource(dg.ConfigurableResource):
    """The warehouse backend chosen by ``ETL_WAREHOUSE`` (``delta`` by default).

    ``snowflake`` and ``bigquery`` reach the warehouse through the field's own Dagster resources,
    ``SnowflakeResource`` and ``BigQueryResource``, configured from the environment by
    ``warehouse_from_env`` (see the README for the variables).
    """

    kind: str = Field(
        default_factory=lambda: load_settings().warehouse, description="delta, snowflake or bigquery"
    )
    root: str = Field(
        default_factory=lambda: load_settings().warehouse_dir,
        description="Delta: folder or object-store URI (s3://, gs://) under which each table lives.",
    )
    # Typed as any resource so that dagster-snowflake and dagster-gcp load only when used; a
    # SnowflakeResource and a BigQueryResource respectively.
    snowflake: dg.ConfigurableResource | None = Field(
        default=None, description="Snowflake: a SnowflakeResource (ETL_WAREHOUSE=snowflake)."
    )
    bigquery: dg.ConfigurableResource | None = Field(
        default=None, description="BigQuery: a BigQueryResource (ETL_WAREHOUSE=bigquery)."
    )
    bigquery_dataset: str = Field(
        default_factory=lambda: os.environ.get("BIGQUERY_DATASET", "etl_assets"),
        description="BigQuery: the dataset holding the tables (BIGQUERY_DATASET).",
    )
    bigquery_endpoint: str | None = Field(
        default_factory=lambda: os.environ.get("BIGQUERY_API_ENDPOINT") or None,
        description="BigQuery: an API endpoint other than Google's (an emulator); unset for BigQuery.",
    )

    def backend(self) -> Warehouse:
        if self.kind == "delta":
            return DeltaWarehouse(self.root)
        if self.kind == "snowflake":
            if self.snowflake is None:
                raise ValueError("ETL_WAREHOUSE=snowflake needs the SNOWFLAKE_* variables (see the README)")
            from etl_assets.warehouse.snowflake import SnowflakeWarehouse

            # The resource's own connection arguments (key-pair auth and extra arguments included),
            # so Ray workers open the same connection the resource would.
            return SnowflakeWarehouse(self.snowflake._connection_args)
        if self.kind == "bigquery":
            if self.bigquery is None:
                raise ValueError("ETL_WAREHOUSE=bigquery needs the BIGQUERY_* variables (see the README)")
            from etl_assets.warehouse.bigquery import BigQueryAccess, BigQueryWarehouse

            return BigQueryWarehouse(
                BigQueryAccess.from_resource(self.bigquery, self.bigquery_dataset, self.bigquery_endpoint)
            )
        raise ValueError(f"ETL_WAREHOUSE={self.kind!r} is not one of delta, snowflake, bigquery")


def _optional_env(*names: str) -> dict[str, str]:
    return {name: os.environ[name] for name in names if os.environ.get(name)}


def snowflake_from_env() -> SnowflakeResource:
    """``SnowflakeResource`` from ``SNOWFLAKE_*``: secrets through ``EnvVar``, so they stay out of
    the run's config; ``SNOWFLAKE_HOST``/``_PORT``/``_PROTOCOL`` point at another endpoint."""
    from dagster_snowflake import SnowflakeResource

    extra: dict[str, object] = {}
    for name in ("HOST", "PROTOCOL"):
        if os.environ.get(f"SNOWFLAKE_{name}"):
            extra[name.lower()] = os.environ[f"SNOWFLAKE_{name}"]
    if os.environ.get("SNOWFLAKE_PORT"):
        extra["port"] = int(os.environ["SNOWFLAKE_PORT"])
    optional = {
        key.removeprefix("SNOWFLAKE_").lower(): value
        for key, value in _optional_env("SNOWFLAKE_WAREHOUSE", "SNOWFLAKE_ROLE").items()
    }
    secret = (
        {"private_key": dg.EnvVar("SNOWFLAKE_PRIVATE_KEY")}
        if os.environ.get("SNOWFLAKE_PRIVATE_KEY")
        else {"password": dg.EnvVar("SNOWFLAKE_PASSWORD")}
    )
    return SnowflakeResource(
        account=dg.EnvVar("SNOWFLAKE_ACCOUNT"),
        user=dg.EnvVar("SNOWFLAKE_USER"),
        database=dg.EnvVar("SNOWFLAKE_DATABASE"),
        schema=os.environ.get("SNOWFLAKE_SCHEMA", "PUBLIC"),
        additional_snowflake_connection_args=extra or None,
        **secret,
        **optional,
    )


def bigquery_from_env() -> BigQueryResource:
    """``BigQueryResource`` from ``BIGQUERY_PROJECT`` (and ``BIGQUERY_LOCATION``); credentials come
    from Google's default chain (``GOOGLE_APPLICATION_CREDENTIALS``) unless
    ``BIGQUERY_CREDENTIALS`` holds a base64 service-account key."""
    from dagster_gcp import BigQueryResource

    optional: dict[str, object] = {}
    if os.environ.get("BIGQUERY_LOCATION"):
        optional["location"] = os.environ["BIGQUERY_LOCATION"]
    if os.environ.get("BIGQUERY_CREDENTIALS"):
        optional["gcp_credentials"] = dg.EnvVar("BIGQUERY_CREDENTIALS")
    return BigQueryResource(project=dg.EnvVar("BIGQUERY_PROJECT"), **optional)


def warehouse_from_env() -> WarehouseResource:
    """The warehouse resource ``ETL_WAREHOUSE`` asks for, its credentials read from the environment."""
    kind = load_settings().warehouse
    if kind == "snowflake":
        return WarehouseResource(kind=kind, snowflake=snowflake_from_env())
    if kind == "bigquery":
        return WarehouseResource(kind=kind, bigquery=bigquery_from_env())
    return WarehouseResource(kind=kind)
