"""Check results per partition: a check over a multi-day run reports one result for each day.

``AssetCheckResult`` in Dagster 1.13 takes no partition, so a partitioned check yields one
``AssetCheckEvaluation`` per partition key (each tied to that partition's latest materialization)
and then the check's output, which is what ``AssetCheckResult`` does for a single partition.
"""

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

import dagster as dg

# Not exported at the top level; the evaluation needs it to tie a result to the materialization.
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)


@dataclass(frozen=True)
class Outcome:
    passed: bool
    metadata: Mapping[str, object] = field(default_factory=dict)
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR


Latest = Mapping[str, dg.EventLogRecord]


def latest_materializations(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, partitions: list[str]
) -> dict[str, dg.EventLogRecord]:
    """The latest materialization of each partition, in two queries whatever the number of
    partitions (a 30-day backfill's checks would otherwise query the instance 30 times each)."""
    latest = instance.event_log_storage.get_latest_storage_id_by_partition(
        asset_key, dg.DagsterEventType.ASSET_MATERIALIZATION, set(partitions)
    )
    if not latest:
        return {}
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, storage_ids=list(latest.values())), limit=len(latest)
    ).records
    by_id = {record.storage_id: record for record in records}
    return {partition: by_id[storage_id] for partition, storage_id in latest.items() if storage_id in by_id}


def per_partition(
    context: dg.AssetCheckExecutionContext,
    outcomes: Mapping[str, Outcome],
    latest: Latest | None = None,
    spec: dg.AssetCheckSpec | None = None,
) -> Iterator[dg.AssetCheckEvaluation | dg.Output]:
    """One evaluation per partition key of the run, each tied to the partition's latest
    materialization (``latest``, when the check has read them already), then the check's output.
    ``spec``: which check, in a step of several (``multi_asset_check``); by default the step's one."""
    if spec is None:
        spec = context.check_specs[0]
    if latest is None:
        latest = latest_materializations(context.instance, spec.asset_key, list(outcomes))
    targets = {
        partition: AssetCheckEvaluationTargetMaterializationData(
            run_id=record.event_log_entry.run_id, storage_id=record.storage_id, timestamp=record.timestamp
        )
        for partition, record in latest.items()
    }
    for partition, outcome in outcomes.items():
        yield dg.AssetCheckEvaluation(
            asset_key=spec.asset_key,
            check_name=spec.name,
            passed=outcome.passed,
            metadata=dict(outcome.metadata),
            severity=outcome.severity,
            blocking=spec.blocking,
            partition=partition,
            target_materialization_data=targets.get(partition),
        )
    # The check's own output: "result" for an ``@asset_check``, one named per check otherwise.
    yield dg.Output(
        None,
        output_name=context.op_execution_context.assets_def.get_output_name_for_asset_check_key(spec.key),
    )


@dataclass(frozen=True)
class CountKeys:
    """Int metadata a check reads off each partition's latest materialization: the sum of ``keys``.
    ``legacy`` names the dict by partition over a run's whole window that materializations carried
    before each partition had its own counts; a partition last written that way is read from it."""

    keys: tuple[str, ...]
    legacy: str


def latest_counts(latest: Latest, partitions: list[str], counts: CountKeys) -> dict[str, int]:
    """``counts`` of each partition's latest materialization (0 for a partition never materialized)."""
    found = {}
    for partition in partitions:
        metadata = latest[partition].asset_materialization.metadata if partition in latest else {}
        legacy = metadata.get(counts.legacy)
        if legacy is not None:
            found[partition] = int(legacy.value.get(partition, 0))
        else:
            found[partition] = sum(int(metadata[k].value) for k in counts.keys if k in metadata)
    return found
