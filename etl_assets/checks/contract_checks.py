"""Checks built from a table's contract: schema, rules, key, reject rate and row-count anomaly.

Every check on a partitioned table reports one result per partition of the run.
"""

import json
from collections.abc import Iterator, Mapping
from datetime import timedelta
from functools import partial

import dagster as dg
import pyarrow as pa
from pydantic import Field

from etl_assets.checks.partitioned import (
    CountKeys,
    Outcome,
    latest_counts,
    latest_materializations,
    per_partition,
    whole,
)
from etl_assets.checks.window_reads import block_partials, key_tallies
from etl_assets.contracts import TableContract
from etl_assets.contracts.drift import schema_drift
from etl_assets.contracts.validation import rule_catalog
from etl_assets.partitions import DAILY, EVENT_BATCHES, window_days
from etl_assets.resources import RayResource, WarehouseResource
from etl_assets.transforms.check_partials import (
    KEY_SAMPLE_ROWS,
    SAMPLE_ROWS,
    key_order,
    merged,
    rule_tally,
)
from etl_assets.warehouse.base import PartitionValue, Warehouse

CheckEvents = Iterator[dg.AssetCheckEvaluation | dg.Output]


def partitions_def_of(contract: TableContract) -> dg.PartitionsDefinition | None:
    """Daily tables are cut on a date column; batch tables on a batch id."""
    if contract.partition_column is None:
        return None
    kind = contract.schema.field(contract.partition_column).type
    return DAILY if pa.types.is_date(kind) else EVENT_BATCHES


def run_partitions(
    context: dg.AssetCheckExecutionContext, contract: TableContract
) -> dict[str, PartitionValue]:
    """The run's partitions of ``contract``'s table: key -> value of its partition column."""
    if partitions_def_of(contract) is DAILY:
        return {d.isoformat(): d for d in window_days(context)}
    return {key: key for key in context.partition_keys}


def _rules_outcome(contract: TableContract, rows: int, failures: list[dict]) -> Outcome:
    """``rows`` checked; ``failures``: per rule code broken, its failing ``rows`` and ``samples``."""
    counts = {f["code"]: f["rows"] for f in sorted(failures, key=lambda f: f["code"])}
    rejecting = {r.code for r in contract.rules if r.rejects}
    broken = rejecting & set(counts)
    severity = dg.AssetCheckSeverity.ERROR if broken or not counts else dg.AssetCheckSeverity.WARN
    return Outcome(
        passed=not counts,
        severity=severity,
        metadata={
            "rows_checked": rows,
            "rule_failures": dg.MetadataValue.json(counts),
            "failing_row_samples": dg.MetadataValue.json(
                {f["code"]: [json.loads(row) for row in f["samples"]] for f in failures}
            ),
            "rules_checked": len(contract.rules) - (1 if contract.key_rule_code else 0),
        },
    )


def _asked(
    partitions: Mapping[str, PartitionValue] | None,
) -> tuple[dict[str, str], list[PartitionValue] | None]:
    """The partition key of each value as the tallies spell it (``value``), and the values to read
    (``None``: the whole table)."""
    key_of = {str(value): key for key, value in (partitions or {}).items()}
    return key_of, list(partitions.values()) if partitions is not None else None


def contract_outcomes(
    ray_cluster: RayResource | None,
    backend: Warehouse,
    contract: TableContract,
    partitions: Mapping[str, PartitionValue] | None,
) -> dict[str | None, Outcome]:
    """Judge the stored rows (of ``partitions``, key -> value, or all) against every rule but the
    key's, which the key check judges; one outcome per partition key (``None``: the whole table).
    Each block is judged in a Ray task, which returns only its counts and samples (a small window
    in the driver, see ``block_partials``)."""
    column = contract.partition_column if partitions is not None else None
    key_of, values = _asked(partitions)
    judge = partial(rule_tally, contract=contract, column=column)
    tallies = block_partials(ray_cluster, backend, contract, values, contract.column_names, judge)
    rows: dict[str | None, int] = dict.fromkeys(partitions or {None: None}, 0)
    failures: dict[str | None, list[dict]] = {key: [] for key in rows}
    for found in merged(tallies, ["value", "code"], SAMPLE_ROWS):
        key = key_of.get(found["value"])
        if found["code"] is None:
            rows[key] += found["rows"]
        else:
            failures[key].append(found)
    return {key: _rules_outcome(contract, rows[key], failures[key]) for key in rows}


def build_contract_rules_check(contract: TableContract) -> dg.AssetChecksDefinition:
    partitions_def = partitions_def_of(contract)

    @dg.asset_check(
        asset=contract.name,
        name=f"{contract.name}_contract_rules",
        partitions_def=partitions_def,
        description=f"Every stored row of {contract.name} keeps its contract's rules (types, nulls, "
        "ranges, accepted values, patterns, cross-column rules); per rule the count of failing rows "
        "and a sample. Fails with ERROR on a rejecting rule, with WARN on a soft one.",
        metadata={"rules": dg.MetadataValue.json(rule_catalog(contract))},
    )
    def _check(
        context: dg.AssetCheckExecutionContext, ray_cluster: RayResource, warehouse: WarehouseResource
    ) -> CheckEvents:
        backend = warehouse.backend()
        if partitions_def is None:
            yield whole(contract_outcomes(ray_cluster, backend, contract, None)[None])
            return
        yield from per_partition(
            context, contract_outcomes(ray_cluster, backend, contract, run_partitions(context, contract))
        )

    return _check


def build_schema_check(contract: TableContract) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=contract.name,
        name=f"{contract.name}_schema_matches_contract",
        description=f"The stored schema of {contract.name} has exactly the contract's columns and types.",
    )
    def _check(warehouse: WarehouseResource) -> dg.AssetCheckResult:
        found = warehouse.backend().table_schema(contract)
        if found is None:
            return dg.AssetCheckResult(passed=False, metadata={"problem": "the table does not exist"})
        drift = schema_drift(found, contract.schema)
        return dg.AssetCheckResult(
            passed=not (drift.added or drift.missing or drift.retyped),
            metadata={
                "drift": dg.MetadataValue.json(drift.as_json()),
                "problem": drift.describe() or "none",
            },
        )

    return _check


def key_outcomes(
    ray_cluster: RayResource | None,
    backend: Warehouse,
    contract: TableContract,
    partitions: Mapping[str, PartitionValue] | None,
) -> dict[str | None, Outcome]:
    """Duplicate keys per partition (``partitions``, key -> value) or over the whole table
    (``None``), found where the rows lie (``key_tallies``): only counts and a few keys reach the
    driver."""
    key_of, values = _asked(partitions)
    found: dict[str | None, dict] = {
        key: {"repeated": 0, "samples": []} for key in (partitions or {None: None})
    }
    tallies = key_tallies(ray_cluster, backend, contract, values)
    for tally in merged(tallies, ["value"], KEY_SAMPLE_ROWS, key_order(contract.keys)):
        found[key_of.get(tally["value"])] = tally
    return {
        key: Outcome(
            passed=tally["repeated"] == 0,
            metadata={
                "duplicate_keys": tally["repeated"],
                "sample": dg.MetadataValue.json([json.loads(row) for row in tally["samples"]]),
            },
        )
        for key, tally in found.items()
    }


def build_key_unique_check(contract: TableContract, whole_table: bool = False) -> dg.AssetChecksDefinition:
    """Key uniqueness per partition of the run, or (``whole_table``) over the whole table."""
    partitions_def = None if whole_table else partitions_def_of(contract)

    @dg.asset_check(
        asset=contract.name,
        name=f"{contract.name}_key_unique",
        partitions_def=partitions_def,
        description=f"No two rows of {contract.name} share ({', '.join(contract.keys)})"
        + (" across the whole table." if partitions_def is None else " within a partition."),
    )
    def _check(
        context: dg.AssetCheckExecutionContext, ray_cluster: RayResource, warehouse: WarehouseResource
    ) -> CheckEvents:
        backend = warehouse.backend()
        if partitions_def is None:
            yield whole(key_outcomes(ray_cluster, backend, contract, None)[None])
            return
        yield from per_partition(
            context, key_outcomes(ray_cluster, backend, contract, run_partitions(context, contract))
        )

    return _check


class RejectRate(dg.Config):
    # Unset: the threshold the table's contract sets.
    max_rate: float | None = None


def build_reject_rate_check(
    loaded: TableContract, rejects: TableContract, duplicates: CountKeys, blocking: bool
) -> dg.AssetChecksDefinition:
    """Rows rejected / rows in, per partition. Rows in count the duplicates the load collapsed
    (read from each partition's materialization, ``duplicates``), so a batch of mostly
    re-delivered events is not taken for a mostly rejected one."""

    @dg.asset_check(
        asset=loaded.name,
        name=f"{loaded.name}_reject_rate",
        partitions_def=partitions_def_of(loaded),
        blocking=blocking,
        description=f"Per partition, rows in {rejects.name} / rows in (loaded + rejected + duplicates "
        "collapsed) stays under "
        f"`max_rate` (default {loaded.max_reject_rate:.0%}, set by the contract)"
        + ("; blocks downstream assets, which would be wrong." if blocking else "."),
    )
    def _check(
        context: dg.AssetCheckExecutionContext, config: RejectRate, warehouse: WarehouseResource
    ) -> CheckEvents:
        backend = warehouse.backend()
        max_rate = loaded.max_reject_rate if config.max_rate is None else config.max_rate
        asked = run_partitions(context, loaded)
        values = list(asked.values())
        loaded_rows = backend.partition_row_counts(loaded, values)
        rejected_rows = backend.partition_row_counts(rejects, values)
        keys = list(asked)
        latest = latest_materializations(context.instance, dg.AssetKey(loaded.name), keys)
        collapsed = latest_counts(latest, keys, duplicates)
        outcomes = {}
        for key in keys:
            good, bad = loaded_rows.get(key, 0), rejected_rows.get(key, 0)
            rows_in = good + bad + collapsed[key]
            rate = bad / rows_in if rows_in else 0.0
            outcomes[key] = Outcome(
                passed=rate <= max_rate,
                metadata={
                    "rows_loaded": good,
                    "rows_rejected": bad,
                    "duplicates_collapsed": collapsed[key],
                    "reject_rate": round(rate, 6),
                    "max_rate": max_rate,
                },
            )
        yield from per_partition(context, outcomes, latest)

    return _check


class AnomalyThreshold(dg.Config):
    trailing_days: int = Field(default=7, ge=1)
    # Warn when a day's row count is further than this fraction from the trailing mean.
    max_deviation: float = 0.5


def build_row_count_anomaly_check(contract: TableContract) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=contract.name,
        name=f"{contract.name}_row_count_anomaly",
        partitions_def=DAILY,
        description=f"Each day's row count of {contract.name} is within `max_deviation` of the mean of "
        "the trailing days that hold rows; warns (does not block) on a large deviation.",
    )
    def _check(
        context: dg.AssetCheckExecutionContext, config: AnomalyThreshold, warehouse: WarehouseResource
    ) -> CheckEvents:
        days = window_days(context)
        # The window's days and the trailing days of each.
        compared = {day - timedelta(days=i) for day in days for i in range(config.trailing_days + 1)}
        counts = warehouse.backend().partition_row_counts(contract, sorted(compared))
        outcomes = {}
        for day in days:
            trailing = [
                counts[d.isoformat()]
                for d in (day - timedelta(days=i) for i in range(config.trailing_days, 0, -1))
                if counts.get(d.isoformat())
            ]
            rows = counts.get(day.isoformat(), 0)
            metadata = {"rows": rows, "trailing_days_with_rows": len(trailing)}
            if not trailing:
                outcomes[day.isoformat()] = Outcome(True, {**metadata, "note": "no trailing days to compare"})
                continue
            mean = sum(trailing) / len(trailing)
            deviation = abs(rows - mean) / mean
            outcomes[day.isoformat()] = Outcome(
                passed=deviation <= config.max_deviation,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={
                    **metadata,
                    "trailing_mean": round(mean, 1),
                    "deviation": round(deviation, 4),
                    "max_deviation": config.max_deviation,
                },
            )
        yield from per_partition(context, outcomes)

    return _check
