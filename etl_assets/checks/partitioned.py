"""Check results per partition: a check over a multi-day run reports one result for each day.

``AssetCheckResult`` in Dagster 1.13 takes no partition, so a partitioned check yields one
``AssetCheckEvaluation`` per partition key (each tied to that partition's latest materialization)
and then the check's output, which is what ``AssetCheckResult`` does for a single partition.
"""

import weakref
from collections import OrderedDict
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


# Materialization records this process has read, per event log, by storage id. A run's checks ask
# for the same partitions' latest records over and over (each check of a table, and each step), and
# reading one means deserializing its whole event (its column schema, lineage and counts): most of
# the growth of a 30-day backfill's checks. A stored event does not change; a record is answered
# only for its own asset and partition, so an id that SQLite gives again after events were deleted
# (it may reuse the highest ids) is read anew unless it is the same asset partition's.
_READ: weakref.WeakKeyDictionary[object, OrderedDict[int, dg.EventLogRecord]] = weakref.WeakKeyDictionary()
# Enough for every partitioned asset of a year's backfill; the oldest read go first beyond it.
READ_RECORDS_MOST = 2_000


def _of(record: dg.EventLogRecord | None, asset_key: dg.AssetKey, partition: str) -> bool:
    return record is not None and record.asset_key == asset_key and record.partition_key == partition


def latest_materializations(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, partitions: list[str]
) -> dict[str, dg.EventLogRecord]:
    """The latest materialization of each partition: one query for their storage ids, and one for
    the records this process has not read yet (none when an earlier check read them), whatever the
    number of partitions."""
    storage = instance.event_log_storage
    latest = storage.get_latest_storage_id_by_partition(
        asset_key, dg.DagsterEventType.ASSET_MATERIALIZATION, set(partitions)
    )
    if not latest:
        return {}
    read = _READ.setdefault(storage, OrderedDict())
    found = {p: read[i] for p, i in latest.items() if _of(read.get(i), asset_key, p)}
    missing = [i for p, i in latest.items() if p not in found]
    if missing:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=asset_key, storage_ids=missing), limit=len(missing)
        ).records
        by_id = {record.storage_id: record for record in records}
        for partition, storage_id in latest.items():
            if partition not in found and _of(by_id.get(storage_id), asset_key, partition):
                found[partition] = read[storage_id] = by_id[storage_id]
        while len(read) > READ_RECORDS_MOST:
            read.popitem(last=False)
    return found


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
