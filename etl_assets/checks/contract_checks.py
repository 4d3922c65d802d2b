"""Checks built from a table's contract: schema, rules, key, reject rate and row-count anomaly.

Every check on a partitioned table reports one result per partition of the run. A table's
non-blocking contract checks are one step (``build_contract_checks``): the UI still shows and runs
each check on its own, and a run has one such step per table instead of one per check, each of
which Dagster pays for in events and storage writes (``benchmarks/README.md``, fixed cost).
"""

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
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
)
from etl_assets.checks.window_reads import block_partials, key_tallies
from etl_assets.contracts import TableContract
from etl_assets.contracts.drift import schema_drift
from etl_assets.contracts.validation import rule_catalog
from etl_assets.partitions import DAILY, EVENT_BATCHES, window_days
from etl_assets.ray_steps import error_message
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


def _schema_judge(contract: TableContract, spec: dg.AssetCheckSpec, backend: Warehouse) -> CheckEvents:
    found = backend.table_schema(contract)
    if found is None:
        yield _result(spec, Outcome(False, {"problem": "the table does not exist"}))
        return
    drift = schema_drift(found, contract.schema)
    yield _result(
        spec,
        Outcome(
            passed=not (drift.added or drift.missing or drift.retyped),
            metadata={"drift": dg.MetadataValue.json(drift.as_json()), "problem": drift.describe() or "none"},
        ),
    )


def _result(spec: dg.AssetCheckSpec, outcome: Outcome) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        asset_key=spec.asset_key,
        check_name=spec.name,
        passed=outcome.passed,
        metadata=outcome.metadata,
        severity=outcome.severity,
    )


def _by_partition(
    context: dg.AssetCheckExecutionContext,
    spec: dg.AssetCheckSpec,
    contract: TableContract,
    outcomes_of: Callable[[Mapping[str, PartitionValue] | None], dict[str | None, Outcome]],
) -> CheckEvents:
    """One result per partition of the run, or one for the whole table when ``spec`` has no
    partitions (``outcomes_of(None)``)."""
    if spec.partitions_def is None:
        yield _result(spec, outcomes_of(None)[None])
        return
    yield from per_partition(context, outcomes_of(run_partitions(context, contract)), spec=spec)


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


class RejectRateConfig(dg.Config):
    # The highest share of rejected rows; unset: the table's contract sets it.
    max_rate: float | None = None


class AnomalyThreshold(dg.Config):
    trailing_days: int = Field(default=7, ge=1)
    # Warn when a day's row count is further than this fraction from the trailing mean.
    max_deviation: float = 0.5


@dataclass(frozen=True)
class RejectRate:
    """A loaded table's reject rate: its rejects table, the duplicates its load collapsed (read
    from each partition's materialization) and whether a breach blocks downstream assets."""

    rejects: TableContract
    duplicates: CountKeys
    blocking: bool


def _reject_rate_judge(
    context: dg.AssetCheckExecutionContext,
    spec: dg.AssetCheckSpec,
    loaded: TableContract,
    rate: RejectRate,
    config: RejectRateConfig,
    backend: Warehouse,
) -> CheckEvents:
    max_rate = loaded.max_reject_rate if config.max_rate is None else config.max_rate
    asked = run_partitions(context, loaded)
    values = list(asked.values())
    loaded_rows = backend.partition_row_counts(loaded, values)
    rejected_rows = backend.partition_row_counts(rate.rejects, values)
    keys = list(asked)
    latest = latest_materializations(context.instance, dg.AssetKey(loaded.name), keys)
    collapsed = latest_counts(latest, keys, rate.duplicates)
    outcomes = {}
    for key in keys:
        good, bad = loaded_rows.get(key, 0), rejected_rows.get(key, 0)
        rows_in = good + bad + collapsed[key]
        share = bad / rows_in if rows_in else 0.0
        outcomes[key] = Outcome(
            passed=share <= max_rate,
            metadata={
                "rows_loaded": good,
                "rows_rejected": bad,
                "duplicates_collapsed": collapsed[key],
                "reject_rate": round(share, 6),
                "max_rate": max_rate,
            },
        )
    yield from per_partition(context, outcomes, latest, spec=spec)


def _row_count_anomaly_judge(
    context: dg.AssetCheckExecutionContext,
    spec: dg.AssetCheckSpec,
    contract: TableContract,
    config: AnomalyThreshold,
    backend: Warehouse,
) -> CheckEvents:
    days = window_days(context)
    # The window's days and the trailing days of each.
    compared = {day - timedelta(days=i) for day in days for i in range(config.trailing_days + 1)}
    counts = backend.partition_row_counts(contract, sorted(compared))
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
    yield from per_partition(context, outcomes, spec=spec)


# What judges one check of a table, given the run's context, the check's spec, the step's config
# (None for a step without settings), Ray and the warehouse.
Judge = Callable[
    [dg.AssetCheckExecutionContext, dg.AssetCheckSpec, dg.Config | None, RayResource, Warehouse],
    CheckEvents,
]


def _contract_check_specs(
    contract: TableContract, key_unique: str | None, reject_rate: RejectRate | None, row_count_anomaly: bool
) -> list[tuple[dg.AssetCheckSpec, Judge]]:
    name, partitions_def = contract.name, partitions_def_of(contract)
    found: list[tuple[dg.AssetCheckSpec, Judge]] = [
        (
            dg.AssetCheckSpec(
                f"{name}_schema_matches_contract",
                asset=name,
                description=f"The stored schema of {name} has exactly the contract's columns and types.",
            ),
            lambda context, spec, config, ray_cluster, backend: _schema_judge(contract, spec, backend),
        ),
        (
            dg.AssetCheckSpec(
                f"{name}_contract_rules",
                asset=name,
                partitions_def=partitions_def,
                description=f"Every stored row of {name} keeps its contract's rules (types, nulls, "
                "ranges, accepted values, patterns, cross-column rules); per rule the count of failing "
                "rows and a sample. Fails with ERROR on a rejecting rule, with WARN on a soft one.",
                metadata={"rules": dg.MetadataValue.json(rule_catalog(contract))},
            ),
            lambda context, spec, config, ray_cluster, backend: _by_partition(
                context, spec, contract, partial(contract_outcomes, ray_cluster, backend, contract)
            ),
        ),
    ]
    if key_unique is not None:
        whole_table = key_unique == WHOLE_TABLE
        found.append(
            (
                dg.AssetCheckSpec(
                    f"{name}_key_unique",
                    asset=name,
                    partitions_def=None if whole_table else partitions_def,
                    description=f"No two rows of {name} share ({', '.join(contract.keys)})"
                    + (
                        " across the whole table."
                        if whole_table or partitions_def is None
                        else " within a partition."
                    ),
                ),
                lambda context, spec, config, ray_cluster, backend: _by_partition(
                    context, spec, contract, partial(key_outcomes, ray_cluster, backend, contract)
                ),
            )
        )
    if reject_rate is not None:
        found.append(
            (
                dg.AssetCheckSpec(
                    f"{name}_reject_rate",
                    asset=name,
                    partitions_def=partitions_def,
                    blocking=reject_rate.blocking,
                    description=f"Per partition, rows in {reject_rate.rejects.name} / rows in (loaded + "
                    "rejected + duplicates collapsed) stays under "
                    f"`max_rate` (default {contract.max_reject_rate:.0%}, set by the contract)"
                    + ("; blocks downstream assets, which would be wrong." if reject_rate.blocking else "."),
                ),
                lambda context, spec, config, ray_cluster, backend: _reject_rate_judge(
                    context, spec, contract, reject_rate, config, backend
                ),
            )
        )
    if row_count_anomaly:
        found.append(
            (
                dg.AssetCheckSpec(
                    f"{name}_row_count_anomaly",
                    asset=name,
                    partitions_def=DAILY,
                    description=f"Each day's row count of {name} is within `max_deviation` of the mean "
                    "of the trailing days that hold rows; warns (does not block) on a large deviation.",
                ),
                lambda context, spec, config, ray_cluster, backend: _row_count_anomaly_judge(
                    context, spec, contract, config, backend
                ),
            )
        )
    return found


# ``key_unique`` of ``build_contract_checks``: keys judged within each partition, or over the table.
WITHIN_PARTITION = "within_partition"
WHOLE_TABLE = "whole_table"


def build_contract_checks(
    contract: TableContract,
    key_unique: str | None = WITHIN_PARTITION,
    reject_rate: RejectRate | None = None,
    row_count_anomaly: bool = False,
) -> list[dg.AssetChecksDefinition]:
    """The checks of ``contract``'s table: its schema, its rules, its key (``key_unique``: within
    each partition, over the whole table, or None for no key check), its reject rate, its
    day-to-day row count. The non-blocking ones share one step, which runs any subset of them; a
    blocking one has a step of its own, named as a lone check's, so that only its own failure
    stops the assets downstream (an error in any check fails the whole step it is in).

    A step has one run config: the shared step's is the row-count anomaly's (``AnomalyThreshold``,
    shown even when only another of its checks is launched), a blocking step's the reject rate's
    (``RejectRateConfig``). A new non-blocking check with settings of its own needs them merged
    into the shared step's, with names that do not clash."""
    judged = _contract_check_specs(contract, key_unique, reject_rate, row_count_anomaly)
    shared = [(spec, judge) for spec, judge in judged if not spec.blocking]
    described = (
        f"The checks of {contract.name} built from its contract: "
        + ", ".join(spec.name.removeprefix(f"{contract.name}_") for spec in specs_of(shared))
        + ". Each runs alone when asked alone."
    )
    # The step's settings are the row-count anomaly's, the only non-blocking check that has any.
    settings = AnomalyThreshold if row_count_anomaly else None
    steps = [_checks_step(f"{contract.name}_contract_checks", shared, described, settings)]
    steps += [
        _checks_step(spec.get_python_identifier(), [(spec, judge)], spec.description, RejectRateConfig)
        for spec, judge in judged
        if spec.blocking
    ]
    return steps


def specs_of(judged: list[tuple[dg.AssetCheckSpec, Judge]]) -> list[dg.AssetCheckSpec]:
    return [spec for spec, _ in judged]


def _checks_step(
    name: str,
    judged: list[tuple[dg.AssetCheckSpec, Judge]],
    description: str | None,
    settings: type[dg.Config] | None,
) -> dg.AssetChecksDefinition:
    """One step named ``name`` for the checks of ``judged``, running those the run selects, with
    ``settings`` as its run config (none when None)."""
    specs = specs_of(judged)
    judges = {spec.key: judge for spec, judge in judged}

    def judge_selected(
        context, config, ray_cluster: RayResource, warehouse: WarehouseResource
    ) -> CheckEvents:
        backend = warehouse.backend()
        selected = context.selected_asset_check_keys
        errors: list[tuple[str, Exception]] = []
        for spec in specs:
            if spec.key in selected:
                # A check that cannot run must not keep the step's other checks from reporting,
                # as it did not when each check had a step of its own; the step fails after them.
                try:
                    yield from judges[spec.key](context, spec, config, ray_cluster, backend)
                except Exception as exc:
                    errors.append((spec.name, exc))
        # One error, or one that asks Dagster for something (a retry, a failure's metadata): as is.
        for _, exc in errors:
            if len(errors) == 1 or isinstance(exc, (dg.Failure, dg.RetryRequested)):
                raise exc
        if errors:
            told = "; ".join(f"{name}: {error_message(exc)}" for name, exc in errors)
            raise RuntimeError(f"{len(errors)} checks could not run: {told}") from errors[0][1]

    checks = partial(dg.multi_asset_check, name=name, specs=specs, can_subset=True, description=description)
    if settings is None:

        @checks()
        def _checks(
            context: dg.AssetCheckExecutionContext, ray_cluster: RayResource, warehouse: WarehouseResource
        ) -> CheckEvents:
            yield from judge_selected(context, None, ray_cluster, warehouse)

        return _checks

    # Dagster reads the step's config class off the annotation, evaluated here (this module does
    # not postpone annotations).
    @checks()
    def _configured(
        context: dg.AssetCheckExecutionContext,
        config: settings,
        ray_cluster: RayResource,
        warehouse: WarehouseResource,
    ) -> CheckEvents:
        yield from judge_selected(context, config, ray_cluster, warehouse)

    return _configured
