"""Business rules of DESIGN.md as checks: nothing lost, referential integrity, reconciliation,
SCD2 validity and CDC agreement with the source; plus the list of every check."""

import json
from datetime import date
from functools import partial

import dagster as dg

from etl_assets.checks.contract_checks import (
    WHOLE_TABLE,
    CheckEvents,
    RejectRate,
    build_contract_checks,
)
from etl_assets.checks.partitioned import (
    CountKeys,
    Outcome,
    latest_counts,
    latest_materializations,
    per_partition,
)
from etl_assets.checks.window_reads import block_partials
from etl_assets.contracts import (
    ALL_TABLES,
    CUSTOMER_ORDERS,
    CUSTOMERS,
    DAILY_CUSTOMER_METRICS,
    EVENTS,
    EVENTS_REJECTS,
    ORDERS,
    ORDERS_REJECTS,
    TRANSACTIONS,
    TableContract,
)
from etl_assets.partitions import DAILY, EVENT_BATCHES, window_days
from etl_assets.resources import CHECK_STEPS, RayResource, SourcesResource, WarehouseResource
from etl_assets.sources.crm import CrmDatabase, source_totals_by_status
from etl_assets.sources.landing import batch_files, count_lines
from etl_assets.sources.orders_lake import inspect_days
from etl_assets.transforms.check_partials import (
    ORPHAN_SAMPLE_ROWS,
    VERSION_SAMPLE_ROWS,
    current_versions_tally,
    key_order,
    merged,
    orphan_tally,
    partition_sums,
)
from etl_assets.transforms.common import cents_text
from etl_assets.transforms.events import DUPLICATES_DROPPED, LEGACY_DUPLICATES_PER_BATCH
from etl_assets.transforms.orders import DUPLICATES_COLLAPSED, LEGACY_DUPLICATES_PER_DAY
from etl_assets.warehouse.base import Warehouse

# Duplicates a partition's last load left out, as its materialization reports them.
ORDER_DUPLICATES = CountKeys((DUPLICATES_COLLAPSED,), LEGACY_DUPLICATES_PER_DAY)
EVENT_DUPLICATES = CountKeys(DUPLICATES_DROPPED, LEGACY_DUPLICATES_PER_BATCH)


class OrphanThreshold(dg.Config):
    max_rate: float = 0.01


class Tolerance(dg.Config):
    # Each metric row's total is rounded to the cent, so totals may differ by half a cent per row.
    cents_per_row: float = 0.005


def _balance(rows_in: int, loaded: int, rejected: int, duplicates: int) -> Outcome:
    """Rows in = loaded + rejected + duplicates collapsed, with the four counts as metadata."""
    counts = {"rows_in": rows_in, "loaded": loaded, "rejected": rejected, "duplicates": duplicates}
    return Outcome(passed=rows_in == loaded + rejected + duplicates, metadata=counts)


@dg.asset_check(
    asset="orders",
    partitions_def=DAILY,
    description="Nothing is lost: for every day, the lake rows (counted from the Parquet footers) "
    "equal the rows loaded + rows rejected + exact duplicates collapsed by the day's last load.",
)
def orders_nothing_lost(
    context: dg.AssetCheckExecutionContext, sources: SourcesResource, warehouse: WarehouseResource
) -> CheckEvents:
    backend = warehouse.backend()
    window = window_days(context)
    loaded = backend.partition_row_counts(ORDERS, window)
    rejected = backend.partition_row_counts(ORDERS_REJECTS, window)
    lake_days = inspect_days(sources.orders_lake_dir, window)
    days = [d.day.isoformat() for d in lake_days]
    latest = latest_materializations(context.instance, dg.AssetKey("orders"), days)
    duplicates = latest_counts(latest, days, ORDER_DUPLICATES)
    outcomes = {}
    for lake_day in lake_days:
        day = lake_day.day.isoformat()
        outcomes[day] = _balance(lake_day.rows, loaded.get(day, 0), rejected.get(day, 0), duplicates[day])
    yield from per_partition(context, outcomes, latest)


@dg.asset_check(
    asset="events",
    partitions_def=EVENT_BATCHES,
    description="Nothing is lost: for every batch, the non-blank lines of its landing files equal "
    "the events loaded + lines rejected + duplicates dropped by the batch's last load.",
)
def events_nothing_lost(
    context: dg.AssetCheckExecutionContext, sources: SourcesResource, warehouse: WarehouseResource
) -> CheckEvents:
    backend = warehouse.backend()
    batches = list(context.partition_keys)
    loaded = backend.partition_row_counts(EVENTS, batches)
    rejected = backend.partition_row_counts(EVENTS_REJECTS, batches)
    latest = latest_materializations(context.instance, dg.AssetKey("events"), batches)
    duplicates = latest_counts(latest, batches, EVENT_DUPLICATES)
    outcomes = {}
    for batch_id in batches:
        lines = sum(count_lines(f.path) for f in batch_files(sources.events_landing_dir, [batch_id]))
        outcomes[batch_id] = _balance(
            lines, loaded.get(batch_id, 0), rejected.get(batch_id, 0), duplicates[batch_id]
        )
    yield from per_partition(context, outcomes, latest)


@dg.asset_check(
    asset="customer_orders",
    partitions_def=DAILY,
    description="Referential integrity, orders to customers: per day, orders with no customer "
    "version valid at order time stay under `max_rate`; warns, and reports the count and a sample.",
)
def customer_orders_orphans(
    context: dg.AssetCheckExecutionContext,
    config: OrphanThreshold,
    ray_cluster: RayResource,
    warehouse: WarehouseResource,
) -> CheckEvents:
    days = window_days(context)
    sampled = ["order_id", "customer_id", "order_ts"]
    tally = partial(orphan_tally, column="order_date", sample_columns=sampled)
    columns = [*sampled, "is_orphan", "order_date"]
    tallies = block_partials(ray_cluster, warehouse.backend(), CUSTOMER_ORDERS, days, columns, tally)
    found = {d.isoformat(): {"orders": 0, "orphans": 0, "samples": []} for d in days}
    found |= {day["value"]: day for day in merged(tallies, ["value"], ORPHAN_SAMPLE_ROWS)}
    outcomes = {}
    for key, day in found.items():
        rate = day["orphans"] / day["orders"] if day["orders"] else 0.0
        outcomes[key] = Outcome(
            passed=rate <= config.max_rate,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "orphan_orders": day["orphans"],
                "orders": day["orders"],
                "orphan_rate": round(rate, 6),
                "max_rate": config.max_rate,
                "sample": dg.MetadataValue.json([json.loads(r) for r in day["samples"]]),
            },
        )
    yield from per_partition(context, outcomes)


def _sums_by_day(
    ray_cluster: RayResource, backend: Warehouse, contract: TableContract, days: list[date], summed: list[str]
) -> dict[str, dict[str, float]]:
    """Rows and the sums of ``summed`` (``<name>_sum``) per day of ``days``, added up from each
    block's."""
    column = contract.partition_column
    sums = partial(partition_sums, column=column, summed=summed)
    found = {d.isoformat(): {"rows": 0, **{f"{name}_sum": 0 for name in summed}} for d in days}
    found |= {
        day["value"]: day
        for day in merged(
            block_partials(ray_cluster, backend, contract, days, [*summed, column], sums), ["value"]
        )
    }
    return found


@dg.asset_check(
    asset="daily_customer_metrics",
    partitions_def=DAILY,
    blocking=True,
    description="For every day, the metrics' total spend and order count equal the sum of order "
    "amounts and the number of orders in customer_orders; blocks on a mismatch.",
)
def daily_customer_metrics_reconcile(
    context: dg.AssetCheckExecutionContext,
    config: Tolerance,
    ray_cluster: RayResource,
    warehouse: WarehouseResource,
) -> CheckEvents:
    backend = warehouse.backend()
    days = window_days(context)
    metrics = _sums_by_day(ray_cluster, backend, DAILY_CUSTOMER_METRICS, days, ["total_spend", "order_count"])
    joined = _sums_by_day(ray_cluster, backend, CUSTOMER_ORDERS, days, ["order_amount"])
    outcomes = {}
    for key, day in metrics.items():
        spend, count = float(day["total_spend_sum"]), int(day["order_count_sum"])
        amount, orders = float(joined[key]["order_amount_sum"]), joined[key]["rows"]
        tolerance = config.cents_per_row * max(day["rows"], 1)
        outcomes[key] = Outcome(
            passed=count == orders and abs(spend - amount) <= tolerance,
            metadata={
                "total_spend": round(spend, 2),
                "order_amount": round(amount, 2),
                "order_count": count,
                "orders": orders,
            },
        )
    yield from per_partition(context, outcomes)


def _missing(contract: TableContract) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=False, metadata={"problem": f"the table {contract.name} does not exist in the warehouse"}
    )


@dg.asset_check(
    asset="customers",
    description="Every customer has exactly one current version, and only the current version "
    "has no valid_to (a current version with a valid_to breaks the contract rule is_current.iff_open); "
    "reports the count of each fault and the first customers at fault.",
)
def customers_one_current_version(
    ray_cluster: RayResource, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    backend = warehouse.backend()
    if not backend.exists(CUSTOMERS):
        return _missing(CUSTOMERS)
    tally = partial(current_versions_tally, key="customer_id")
    columns = ["customer_id", "is_current", "valid_to"]
    parts = block_partials(ray_cluster, backend, CUSTOMERS, None, columns, tally, spread="customer_id")
    counted = ["entities", "current_rows", "without_current", "several_current", "open_not_current"]
    found = dict.fromkeys(counted, 0) | {"samples": []}
    for total in merged(parts, [], VERSION_SAMPLE_ROWS, key_order(["customer_id"])):  # one, or none
        found |= total
    return dg.AssetCheckResult(
        passed=found["without_current"] == found["several_current"] == found["open_not_current"] == 0,
        metadata={
            "customers": found["entities"],
            "current_rows": found["current_rows"],
            "customers_without_current": found["without_current"],
            "customers_with_several_current": found["several_current"],
            "open_rows_not_current": found["open_not_current"],
            "sample": dg.MetadataValue.json([json.loads(r) for r in found["samples"]]),
        },
    )


@dg.asset_check(
    asset="transactions",
    description="Per status, the warehouse's count and sum of amount equal the CRM's.",
)
def transactions_reconcile_with_source(
    ray_cluster: RayResource, sources: SourcesResource, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    backend = warehouse.backend()
    if not backend.exists(TRANSACTIONS):
        return _missing(TRANSACTIONS)
    source = source_totals_by_status(CrmDatabase(sources.crm_url))
    sums = partial(partition_sums, column="status", summed=["amount"])
    parts = block_partials(ray_cluster, backend, TRANSACTIONS, None, ["status", "amount"], sums)
    ours = {s["value"]: (s["rows"], cents_text(s["amount_sum"])) for s in merged(parts, ["value"])}
    differ = {
        status: {"source": source.get(status), "warehouse": ours.get(status)}
        for status in sorted(set(source) | set(ours), key=str)
        if source.get(status) != ours.get(status)
    }
    return dg.AssetCheckResult(
        passed=not differ,
        metadata={
            "differences": dg.MetadataValue.json(differ),
            "source": dg.MetadataValue.json({str(k): list(v) for k, v in source.items()}),
        },
    )


@dg.asset_check(
    asset="transactions",
    description="The watermark recorded by the latest materialization is not older than the one before.",
)
def transactions_watermark_monotonic(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    records = context.instance.fetch_materializations(dg.AssetKey("transactions"), limit=2).records
    marks = [r.asset_materialization.metadata.get("watermark") for r in records]
    marks = [m.value for m in marks if m is not None and m.value]
    passed = len(marks) < 2 or marks[0] >= marks[1]
    return dg.AssetCheckResult(
        passed=passed,
        metadata={"latest": marks[0] if marks else "", "before": marks[1] if len(marks) > 1 else ""},
    )


# What each table's contract checks hold beyond its schema, its rules and its key within a
# partition: every table of ``ALL_TABLES`` gets them, in a step of its own (and one for each
# blocking check).
CONTRACT_CHECK_OPTIONS: dict[str, dict] = {
    # Blocking: customer_orders and the metrics would be built from a mostly rejected day.
    ORDERS.name: {
        "reject_rate": RejectRate(ORDERS_REJECTS, ORDER_DUPLICATES, blocking=True),
        "row_count_anomaly": True,
    },
    ORDERS_REJECTS.name: {"key_unique": None},
    CUSTOMER_ORDERS.name: {"row_count_anomaly": True},
    DAILY_CUSTOMER_METRICS.name: {"row_count_anomaly": True},
    # An event id is unique across every batch, not only within one. Blocking: hourly_user_metrics
    # would be built from a mostly garbage batch.
    EVENTS.name: {
        "key_unique": WHOLE_TABLE,
        "reject_rate": RejectRate(EVENTS_REJECTS, EVENT_DUPLICATES, blocking=True),
    },
    EVENTS_REJECTS.name: {"key_unique": None},
}
CONTRACT_CHECKS = [
    step
    for table in ALL_TABLES
    for step in build_contract_checks(table, **CONTRACT_CHECK_OPTIONS.get(table.name, {}))
]

CHECKS = [
    *CONTRACT_CHECKS,
    orders_nothing_lost,
    events_nothing_lost,
    customer_orders_orphans,
    daily_customer_metrics_reconcile,
    customers_one_current_version,
    transactions_reconcile_with_source,
    transactions_watermark_monotonic,
]
# A run of these alone starts Ray only when one of them needs it (``RayResource``).
CHECK_STEPS.update(check.node_def.name for check in CHECKS)


def checks_of(assets: list) -> list:
    """The platform's checks of ``assets``: what a run of them from the UI or a schedule runs too."""
    keys = {key for asset in assets for key in asset.keys}
    return [c for c in CHECKS if any(k.asset_key in keys for k in c.check_keys)]


def check_named(name: str) -> dg.AssetChecksDefinition:
    """The step that holds the check called ``name`` (a table's contract checks share one)."""
    found = [c for c in CHECKS if name in {k.name for k in c.check_keys}]
    if not found:
        raise KeyError(f"no check is called {name}")
    if len(found) > 1:
        raise KeyError(f"several steps hold a check called {name}: {[c.node_def.name for c in found]}")
    return found[0]


def check_key_named(name: str) -> dg.AssetCheckKey:
    """The key of the check called ``name``."""
    return next(k for k in check_named(name).check_keys if k.name == name)


def checks_alone(job: dg.JobDefinition, names: list[str]) -> dg.JobDefinition:
    """``job`` cut to the checks called ``names``, as the UI's "Execute check" launches them: the
    steps that hold them run those checks and no others."""
    if not names:
        raise ValueError("checks_alone needs at least one check (an empty selection is the whole job)")
    return job.get_subset(asset_selection=set(), asset_check_selection={check_key_named(n) for n in names})
