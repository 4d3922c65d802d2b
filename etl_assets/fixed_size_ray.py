"""Ray Data on a Ray of fixed size that this process started: without Ray Data's two helper actors.

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

Ray has no public setting for either: the cluster autoscaler is a ``DeveloperAPI`` interface
that ``create_cluster_autoscaler`` chooses without a hook for one of ours, and ``_StatsManager``
is private. Ray is pinned to 2.60; should a later Ray move either, ``_install`` fails loudly
(``AttributeError``) rather than leaving the actors back in every run unnoticed.
"""

from __future__ import annotations

import threading

import ray
from ray.data._internal.cluster_autoscaler import ClusterAutoscaler
from ray.data._internal.execution import streaming_executor
from ray.data._internal.execution.interfaces.execution_options import ExecutionResources
from ray.data._internal.stats import _StatsManager

from etl_assets.ray_cluster import FIXED_SIZE_RESOURCE

# The GCS addresses of the Rays this process marked: a process may start one, stop it and later
# connect to another (a test's private Ray, then the session's), and only the marked ones count.
_FIXED_SIZE: set[str] = set()
_installed = threading.Lock()
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
        return self._total


def on_fixed_size_ray() -> bool:
    """Whether this process is connected to a Ray it marked with ``treat_as_fixed_size``."""
    return ray.is_initialized() and ray.get_runtime_context().gcs_address in _FIXED_SIZE


def declares_fixed_size() -> bool:
    """Whether the Ray this process is connected to says it is of fixed size: it was started with
    the resource ``FIXED_SIZE_RESOURCE``, as ``ray_cluster up`` starts the persistent local Ray."""
    return FIXED_SIZE_RESOURCE in ray.cluster_resources()


def treat_as_fixed_size() -> None:
    """Mark the Ray this process is connected to (one it started) as of fixed size."""
    _install()
    _FIXED_SIZE.add(ray.get_runtime_context().gcs_address)


def _install() -> None:
    with _installed:
        if getattr(streaming_executor.create_cluster_autoscaler, "etl_assets_wrapped", False):
            return
        shipped = streaming_executor.create_cluster_autoscaler

        def create_cluster_autoscaler(*args, **kwargs) -> ClusterAutoscaler:
            return FixedSizeCluster() if on_fixed_size_ray() else shipped(*args, **kwargs)

        create_cluster_autoscaler.etl_assets_wrapped = True
        streaming_executor.create_cluster_autoscaler = create_cluster_autoscaler
        for name in _STATS_REPORTS:
            setattr(_StatsManager, name, staticmethod(_unless_fixed_size(getattr(_StatsManager, name))))


def _unless_fixed_size(report):
    def maybe_report(*args, **kwargs) -> None:
        if not on_fixed_size_ray():
            report(*args, **kwargs)

    return maybe_report
