"""Checks built from a table's contract: schema, rules, key, reject rate and row-count anomaly.

Every check on a partitioned table reports one result per partition of the run.
"""

import json
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from etl_assets.checks.partitioned import (
    CountKeys,
    Outcome,
    latest_counts,
    latest_materializations,
    per_partition,
    whole,
)
from etl_assets.checks.window_reads import block_partials, key_duplicates
from etl_assets.contracts import TableContract
from etl_assets.contracts.drift import schema_drift
from etl_assets.contracts.validation import rule_catalog
from etl_assets.partitions import DAILY, EVENT_BATCHES, window_days
from etl_assets.resources import RayResource, WarehouseResource
from etl_assets.transforms.check_partials import (
    SAMPLE_ROWS,
    duplicated_keys,
    jsonable,
    partition_text,
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


@dataclass
class _RuleTally:
    rows: int = 0
    counts: Counter = field(default_factory=Counter)
    samples: dict = field(default_factory=dict)

    def add(self, code: str | None, rows: int, samples: list[str]) -> None:
        if code is None:
            self.rows += rows
            return
        self.counts[code] += rows
        # The smallest of the candidates each block offers, so the order blocks come back in does
        # not change the sample.
        self.samples[code] = sorted([*self.samples.get(code, []), *samples])[:SAMPLE_ROWS]

    def outcome(self, contract: TableContract) -> Outcome:
        rejecting = {r.code for r in contract.rules if r.rejects}
        broken = {c for c in self.counts if c in rejecting}
        severity = dg.AssetCheckSeverity.ERROR if broken or not self.counts else dg.AssetCheckSeverity.WARN
        return Outcome(
            passed=not self.counts,
            severity=severity,
            metadata={
                "rows_checked": self.rows,
                "rule_failures": dg.MetadataValue.json(dict(sorted(self.counts.items()))),
                "failing_row_samples": dg.MetadataValue.json(
                    {code: [json.loads(row) for row in rows] for code, rows in self.samples.items()}
                ),
                "rules_checked": len(contract.rules) - (1 if contract.key_rule_code else 0),
            },
        )


def contract_outcomes(
    backend: Warehouse, contract: TableContract, partitions: Mapping[str, PartitionValue] | None
) -> dict[str | None, Outcome]:
    """Judge the stored rows (of ``partitions``, key -> value, or all) against every rule but the
    key's, which the key check judges; one outcome per partition key (``None``: the whole table).
    Each block is judged in a Ray task, which returns only its counts and samples (a small window
    in the driver, see ``block_partials``)."""
    column = contract.partition_column if partitions is not None else None
    tallies: dict[str | None, _RuleTally] = {key: _RuleTally() for key in (partitions or {None: None})}
    key_of = {str(value): key for key, value in (partitions or {}).items()}
    values = list(partitions.values()) if partitions is not None else None
    judge = partial(rule_tally, contract=contract, column=column)
    for tally in block_partials(backend, contract, values, contract.column_names, judge):
        for row in tally.to_pylist():
            tallies[key_of.get(row["value"])].add(row["code"], row["rows"], row["samples"])
    return {key: tally.outcome(contract) for key, tally in tallies.items()}


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
            yield whole(contract_outcomes(backend, contract, None)[None])
            return
        yield from per_partition(
            context, contract_outcomes(backend, contract, run_partitions(context, contract))
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


KEY_SAMPLE_ROWS = 5


def _key_outcome(dupes: pa.Table) -> Outcome:
    return Outcome(
        passed=dupes.num_rows == 0,
        metadata={
            "duplicate_keys": dupes.num_rows,
            "sample": dg.MetadataValue.json(
                [jsonable(r) for r in dupes.slice(0, KEY_SAMPLE_ROWS).to_pylist()]
            ),
        },
    )


def key_outcomes(
    backend: Warehouse, contract: TableContract, partitions: Mapping[str, PartitionValue] | None
) -> dict[str | None, Outcome]:
    """Duplicate keys per partition (``partitions``, key -> value) or over the whole table
    (``None``), found where the rows lie (``key_duplicates``): only duplicates reach the driver."""
    keys = list(contract.keys)
    column = contract.partition_column if partitions is not None else None
    grouped = list(dict.fromkeys([*keys, *([column] if column else [])]))
    values = list(partitions.values()) if partitions is not None else None
    found = list(key_duplicates(backend, contract, values, partial(duplicated_keys, keys=grouped)))
    # Nullable: a stored key that breaks its not-null rule is still counted, not a crash.
    fields = [contract.schema.field(c).with_nullable(True) for c in grouped]
    schema = pa.schema([*fields, ("count_all", pa.int64())])
    dupes = pa.concat_tables([t.cast(schema) for t in found]) if found else schema.empty_table()
    dupes = dupes.sort_by([(k, "ascending") for k in keys])
    if partitions is None:
        return {None: _key_outcome(dupes)}
    spelled = partition_text(dupes, column)
    outcomes = {}
    for key, value in partitions.items():
        of_value = dupes.filter(pc.equal(spelled, str(value)))
        outcomes[key] = _key_outcome(of_value.drop_columns([column]) if column not in keys else of_value)
    return outcomes


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
            yield whole(key_outcomes(backend, contract, None)[None])
            return
        yield from per_partition(context, key_outcomes(backend, contract, run_partitions(context, contract)))

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
        loaded_rows = backend.partition_row_counts(loaded)
        rejected_rows = backend.partition_row_counts(rejects)
        keys = list(run_partitions(context, loaded))
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
    trailing_days: int = 7
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
        counts = warehouse.backend().partition_row_counts(contract)
        outcomes = {}
        for day in window_days(context):
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
