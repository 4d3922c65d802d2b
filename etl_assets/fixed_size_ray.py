"""Ray Data on a local Ray of fixed size (a private one, or ``make ray-up``'s): without its two helper actors.

In Ray 2.60 each Dataset execution asks Ray Data's autoscaling coordinator (a detached actor,
``_AutoscalingCoordinatorActor``) how many CPUs it may use, and reports its progress to Ray
Data's stats actor (``_StatsActor``), which feeds the dashboard's Ray Data panels. Each is a
worker process of its own importing ray.data: about 200 MiB of RSS each, for the whole run. On
the private Ray a run starts (``RayResource``, the benchmarks, the tests' session), both start
during the run's first Ray Data execution, on the cores its tasks need, and neither has a use:
one machine has nothing to autoscale (its CPUs are all the execution may use) and the private
Ray runs no dashboard.

``treat_as_fixed_size`` marks the Ray this process is connected to as such a Ray. Dataset
executions on it then read its size at their start (``FixedSizeCluster``) and report no metrics
to the stats actor, so neither actor starts. The persistent local Ray (``make ray-up``) says it is
one too (``declares_fixed_size``): every run connecting to it marks it. On any other Ray (a
cluster reached through ``RAY_ADDRESS``, which may autoscale and may run a dashboard) Ray Data
behaves as shipped.

Each execution on a marked Ray may use the whole of it, as Ray Data did before its coordinator:
the coordinator's one service beyond the cluster's size is to split it among executions of
several drivers at once. A private Ray has one driver; on the persistent one, runs queued by the
Dagster instance run one at a time (``dagster.yaml``), and CLI runs started side by side by hand
each plan for the whole object store and spill more than they would with the coordinator.

Ray has no public setting for either: the cluster autoscaler is a ``DeveloperAPI`` interface
that ``create_cluster_autoscaler`` chooses without a hook for one of ours, and ``_StatsManager``
is private. Ray is pinned to 2.60; should a later Ray move either, importing this module (and so
``etl_assets.resources``) fails loudly (``ImportError``, or ``AttributeError`` in ``_install``)
rather than leaving the actors back in every run unnoticed. A report method added to
``_StatsManager`` by a later Ray would start the stats actor again without an error here: the
tests that look for the actors by name catch that.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable

import ray
from ray.data._internal.cluster_autoscaler import ClusterAutoscaler
from ray.data._internal.execution import streaming_executor
from ray.data._internal.execution.interfaces.execution_options import ExecutionResources
from ray.data._internal.stats import _StatsManager

from etl_assets.ray_cluster import FIXED_SIZE_RESOURCE

# The session names of the Rays this process marked: a process may start one, stop it and later
# connect to another (a benchmark's private Ray, then a persistent one), and only the marked ones
# count. A session name is unique to one start of a cluster; a GCS address is not (a private
# Ray's GCS port is any free one, and a later Ray may get it again).
_FIXED_SIZE: set[str] = set()
_install_lock = threading.Lock()
_STATS_REPORTS = ("register_dataset_to_stats_actor", "update_execution_metrics", "update_iteration_metrics")


class FixedSizeCluster(ClusterAutoscaler):
    """A cluster whose resources never change: all of them are the execution's to use."""

    def __init__(self) -> None:
        self._total = ExecutionResources.from_resource_dict(ray.cluster_resources())

    def try_trigger_scaling(self) -> None:
        """Nothing to scale."""

    def on_executor_shutdown(self) -> None:
        """No request to cancel."""

    def get_total_resources(self) -> ExecutionResources:
        """The cluster's resources when the execution started."""
        return self._total


def on_fixed_size_ray() -> bool:
    """Whether this process is connected to a Ray it marked with ``treat_as_fixed_size``."""
    try:
        return ray.is_initialized() and ray.get_runtime_context().get_session_name() in _FIXED_SIZE
    except Exception:  # noqa: BLE001
        # ray.shutdown() under way (an execution's last metrics report can race the run's
        # teardown): the Ray is gone, and whatever it was, there is nothing to report to.
        return False


def declares_fixed_size() -> bool:
    """Whether the Ray this process is connected to says it is of fixed size: it was started with
    the resource ``FIXED_SIZE_RESOURCE``, as ``ray_cluster up`` starts the persistent local Ray."""
    return FIXED_SIZE_RESOURCE in ray.cluster_resources()


def treat_as_fixed_size() -> None:
    """Mark the Ray this process is connected to (one it started, or one that
    ``declares_fixed_size``) as of fixed size."""
    _install()
    _FIXED_SIZE.add(ray.get_runtime_context().get_session_name())


def _install() -> None:
    with _install_lock:
        if getattr(streaming_executor.create_cluster_autoscaler, "etl_assets_wrapped", False):
            return
        shipped = streaming_executor.create_cluster_autoscaler

        # Replaces every choice of the shipped function on a marked Ray, its placement-group
        # autoscaler and label selectors included: the platform's executions use neither.
        @functools.wraps(shipped)
        def create_cluster_autoscaler(*args, **kwargs) -> ClusterAutoscaler:
            return FixedSizeCluster() if on_fixed_size_ray() else shipped(*args, **kwargs)

        create_cluster_autoscaler.etl_assets_wrapped = True
        streaming_executor.create_cluster_autoscaler = create_cluster_autoscaler
        for name in _STATS_REPORTS:
            setattr(_StatsManager, name, staticmethod(_unless_fixed_size(getattr(_StatsManager, name))))


def _unless_fixed_size(report: Callable[..., None]) -> Callable[..., None]:
    """``report`` (one of ``_StatsManager``'s), made to do nothing on a marked Ray."""

    @functools.wraps(report)
    def maybe_report(*args, **kwargs) -> None:
        if not on_fixed_size_ray():
            report(*args, **kwargs)

    return maybe_report
