"""The first set of checks: key uniqueness, not-null, reject rate, orphans and reconciliation."""

from datetime import timedelta

import dagster as dg
import pyarrow.compute as pc

from etl_assets.checks.window_reads import days_of, duplicate_keys, read_columns
from etl_assets.partitions import DAILY, EVENT_BATCHES, window_days
from etl_assets.resources import SourcesResource, WarehouseResource
from etl_assets.sources.crm import CrmDatabase, source_totals_by_status
from etl_assets.sources.orders_lake import inspect_days
from etl_assets.transforms.orders import DUPLICATES_PER_DAY
from etl_assets.transforms.tables import (
    CUSTOMER_ORDERS,
    CUSTOMERS,
    DAILY_CUSTOMER_METRICS,
    EVENTS,
    EVENTS_REJECTS,
    ORDERS,
    ORDERS_REJECTS,
    RAW_CUSTOMERS,
    TRANSACTIONS,
    TableContract,
)


class RateThreshold(dg.Config):
    max_rate: float = 0.05


class OrphanThreshold(dg.Config):
    max_rate: float = 0.01


class AnomalyThreshold(dg.Config):
    trailing_days: int = 7
    # Warn when a day's row count is further than this fraction from the trailing mean.
    max_deviation: float = 0.5


class Tolerance(dg.Config):
    # Each metric row's total is rounded to the cent, so totals may differ by half a cent per row.
    cents_per_row: float = 0.005


def _sample(table, limit: int = 5) -> dg.MetadataValue:
    return dg.MetadataValue.json(table.slice(0, limit).to_pylist() if table.num_rows else [])


def build_unique_key_check(contract: TableContract, whole_table: bool = False) -> dg.AssetChecksDefinition:
    """Key uniqueness over the run's days of a daily table, or over the whole table."""
    keys = list(contract.keys)
    daily = contract.partition_column is not None and not whole_table

    @dg.asset_check(
        asset=contract.name,
        name=f"{contract.name}_key_unique",
        partitions_def=DAILY if daily else None,
        description=f"No two rows of {contract.name} share ({', '.join(keys)}).",
    )
    def _check(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
        backend = warehouse.backend()
        if daily:
            duplicates = 0
            per_day = {}
            sample = None
            for day, table in days_of(backend, contract, window_days(context), keys):
                dupes = duplicate_keys(table, keys)
                per_day[day.isoformat()] = dupes.num_rows
                duplicates += dupes.num_rows
                sample = sample if sample is not None and sample.num_rows else dupes
        else:
            table = read_columns(backend, contract, None, keys)
            sample = duplicate_keys(table, keys)
            duplicates, per_day = sample.num_rows, {}
        return dg.AssetCheckResult(
            passed=duplicates == 0,
            metadata={
                "duplicate_keys": duplicates,
                "duplicates_per_day": dg.MetadataValue.json(per_day),
                "sample": _sample(sample) if sample is not None else _sample([]),
            },
        )

    return _check


def build_not_null_check(contract: TableContract) -> dg.AssetChecksDefinition:
    required = [c.name for c in contract.columns if not c.nullable]

    @dg.asset_check(
        asset=contract.name,
        name=f"{contract.name}_required_not_null",
        partitions_def=DAILY if contract.partition_column else None,
        description=f"Required columns of {contract.name} hold no nulls: {', '.join(required)}.",
    )
    def _check(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource) -> dg.AssetCheckResult:
        backend = warehouse.backend()
        nulls = dict.fromkeys(required, 0)
        if contract.partition_column:
            tables = (t for _, t in days_of(backend, contract, window_days(context), required))
        else:
            tables = iter([read_columns(backend, contract, None, required)])
        for table in tables:
            for name in required:
                nulls[name] += table.column(name).null_count
        return dg.AssetCheckResult(
            passed=not any(nulls.values()), metadata={"null_counts": dg.MetadataValue.json(nulls)}
        )

    return _check


def _row_count(backend, contract: TableContract, days) -> int:
    return sum(batch.num_rows for batch in backend.scan(contract, days, [contract.partition_column]))


@dg.asset_check(
    asset="orders",
    partitions_def=DAILY,
    description="Rejected rows / (loaded + rejected rows) of the window stays under `max_rate`.",
)
def orders_reject_rate(
    context: dg.AssetCheckExecutionContext, config: RateThreshold, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    return _reject_rate(warehouse.backend(), ORDERS, ORDERS_REJECTS, window_days(context), config.max_rate)


def _reject_rate(backend, loaded_table, rejects_table, partitions, max_rate: float) -> dg.AssetCheckResult:
    """Rejected rows / (loaded + rejected rows) over ``partitions`` of both tables."""
    loaded = _row_count(backend, loaded_table, partitions)
    rejected = _row_count(backend, rejects_table, partitions)
    rate = rejected / (loaded + rejected) if loaded + rejected else 0.0
    return dg.AssetCheckResult(
        passed=rate <= max_rate,
        metadata={
            "rows_loaded": loaded,
            "rows_rejected": rejected,
            "reject_rate": round(rate, 6),
            "max_rate": max_rate,
        },
    )


@dg.asset_check(
    asset="orders",
    partitions_def=DAILY,
    description="Nothing is lost: for every day, the lake rows (counted from the Parquet footers) "
    "equal the rows loaded + rows rejected + exact duplicates collapsed by the day's last load.",
)
def orders_nothing_lost(
    context: dg.AssetCheckExecutionContext, sources: SourcesResource, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    backend = warehouse.backend()
    unbalanced = {}
    for lake_day in inspect_days(sources.orders_lake_dir, window_days(context)):
        day = lake_day.day.isoformat()
        loaded = _row_count(backend, ORDERS, [lake_day.day])
        rejected = _row_count(backend, ORDERS_REJECTS, [lake_day.day])
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("orders"), asset_partitions=[day]), limit=1
        ).records
        per_day = records[0].asset_materialization.metadata.get(DUPLICATES_PER_DAY) if records else None
        duplicates = (per_day.value if per_day is not None else {}).get(day, 0)
        if lake_day.rows != loaded + rejected + duplicates:
            unbalanced[day] = {
                "rows_in": lake_day.rows,
                "loaded": loaded,
                "rejected": rejected,
                "duplicates": duplicates,
            }
    return dg.AssetCheckResult(
        passed=not unbalanced, metadata={"unbalanced_days": dg.MetadataValue.json(unbalanced)}
    )


@dg.asset_check(
    asset="orders",
    partitions_def=DAILY,
    description="Each day's row count is within `max_deviation` of the mean of the trailing days "
    "that hold rows; warns (does not block) on a large deviation.",
)
def orders_row_count_anomaly(
    context: dg.AssetCheckExecutionContext, config: AnomalyThreshold, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    backend = warehouse.backend()
    days = window_days(context)
    history = [days[0] - timedelta(days=i) for i in range(config.trailing_days, 0, -1)] + days
    counts = {d: _row_count(backend, ORDERS, [d]) for d in history}
    anomalies, compared = {}, {}
    for i, day in enumerate(history[config.trailing_days :], start=config.trailing_days):
        trailing = [counts[d] for d in history[i - config.trailing_days : i] if counts[d]]
        if not trailing:
            continue
        mean = sum(trailing) / len(trailing)
        deviation = abs(counts[day] - mean) / mean
        compared[day.isoformat()] = {
            "rows": counts[day],
            "trailing_mean": round(mean, 1),
            "deviation": round(deviation, 4),
        }
        if deviation > config.max_deviation:
            anomalies[day.isoformat()] = compared[day.isoformat()]
    return dg.AssetCheckResult(
        passed=not anomalies,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "anomalies": dg.MetadataValue.json(anomalies),
            "compared": dg.MetadataValue.json(compared),
            "max_deviation": config.max_deviation,
        },
    )


@dg.asset_check(
    asset="customer_orders",
    partitions_def=DAILY,
    description="Orders with no customer version valid at order time stay under `max_rate`; "
    "their count is reported.",
)
def customer_orders_orphans(
    context: dg.AssetCheckExecutionContext, config: OrphanThreshold, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    orphans = rows = 0
    for _, table in days_of(warehouse.backend(), CUSTOMER_ORDERS, window_days(context), ["is_orphan"]):
        rows += table.num_rows
        orphans += int(pc.sum(table.column("is_orphan")).as_py() or 0)
    rate = orphans / rows if rows else 0.0
    return dg.AssetCheckResult(
        passed=rate <= config.max_rate,
        severity=dg.AssetCheckSeverity.WARN,
        metadata={
            "orphan_orders": orphans,
            "orders": rows,
            "orphan_rate": round(rate, 6),
            "max_rate": config.max_rate,
        },
    )


@dg.asset_check(
    asset="daily_customer_metrics",
    partitions_def=DAILY,
    blocking=True,
    description="For every day of the window, the metrics' total spend and order count equal the "
    "sum of order amounts and the number of orders in customer_orders.",
)
def daily_customer_metrics_reconcile(
    context: dg.AssetCheckExecutionContext, config: Tolerance, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    backend = warehouse.backend()
    days = window_days(context)
    mismatches = {}
    spend_total = orders_total = 0.0
    for (day, metrics), (_, joined) in zip(
        days_of(backend, DAILY_CUSTOMER_METRICS, days, ["total_spend", "order_count"]),
        days_of(backend, CUSTOMER_ORDERS, days, ["order_amount"]),
    ):
        spend = float(pc.sum(metrics.column("total_spend")).as_py() or 0.0)
        count = int(pc.sum(metrics.column("order_count")).as_py() or 0)
        amount = float(pc.sum(joined.column("order_amount")).as_py() or 0.0)
        spend_total += spend
        orders_total += amount
        if count != joined.num_rows or abs(spend - amount) > config.cents_per_row * max(metrics.num_rows, 1):
            mismatches[day.isoformat()] = {
                "total_spend": spend,
                "order_amount": amount,
                "order_count": count,
                "orders": joined.num_rows,
            }
    return dg.AssetCheckResult(
        passed=not mismatches,
        metadata={
            "mismatched_days": dg.MetadataValue.json(mismatches),
            "total_spend": round(spend_total, 2),
            "order_amount_total": round(orders_total, 2),
        },
    )


@dg.asset_check(
    asset="customers",
    description="Every customer has exactly one current version, and only the current version "
    "has no valid_to.",
)
def customers_one_current_version(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    table = read_columns(warehouse.backend(), CUSTOMERS, None, ["customer_id", "is_current", "valid_to"])
    current = table.filter(table.column("is_current"))
    customers_n = len(pc.unique(table.column("customer_id")))
    many = duplicate_keys(current.select(["customer_id"]), ["customer_id"])
    open_not_current = table.filter(
        pc.and_(pc.is_null(table.column("valid_to")), pc.invert(table.column("is_current")))
    ).num_rows
    passed = current.num_rows == customers_n and many.num_rows == 0 and open_not_current == 0
    return dg.AssetCheckResult(
        passed=passed,
        metadata={
            "customers": customers_n,
            "current_rows": current.num_rows,
            "customers_with_several_current": many.num_rows,
            "open_rows_not_current": open_not_current,
        },
    )


@dg.asset_check(
    asset="events",
    partitions_def=EVENT_BATCHES,
    blocking=True,
    description="Rejected lines / all lines of the run's batches stay under `max_rate`; blocks "
    "hourly_user_metrics when a batch is mostly garbage.",
)
def events_reject_rate(
    context: dg.AssetCheckExecutionContext, config: RateThreshold, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    return _reject_rate(warehouse.backend(), EVENTS, EVENTS_REJECTS, context.partition_keys, config.max_rate)


@dg.asset_check(
    asset="transactions",
    description="Per status, the warehouse's count and sum of amount equal the CRM's.",
)
def transactions_reconcile_with_source(
    sources: SourcesResource, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    source = source_totals_by_status(CrmDatabase(sources.crm_url))
    table = read_columns(warehouse.backend(), TRANSACTIONS, None, ["status", "amount"])
    grouped = table.group_by(["status"]).aggregate([("amount", "count"), ("amount", "sum")])
    ours = {row["status"]: (row["amount_count"], f"{row['amount_sum']:.2f}") for row in grouped.to_pylist()}
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


CHECKS = [
    *(
        build_unique_key_check(c)
        for c in (RAW_CUSTOMERS, CUSTOMERS, ORDERS, CUSTOMER_ORDERS, DAILY_CUSTOMER_METRICS)
    ),
    *(build_not_null_check(c) for c in (RAW_CUSTOMERS, ORDERS, CUSTOMER_ORDERS, DAILY_CUSTOMER_METRICS)),
    orders_reject_rate,
    orders_nothing_lost,
    orders_row_count_anomaly,
    customer_orders_orphans,
    daily_customer_metrics_reconcile,
    customers_one_current_version,
    build_unique_key_check(EVENTS, whole_table=True),
    build_unique_key_check(TRANSACTIONS),
    events_reject_rate,
    transactions_reconcile_with_source,
    transactions_watermark_monotonic,
]
