"""Customers: the cleaned CRM versions of each day, and the SCD type 2 dimension."""

from datetime import datetime, timedelta
from functools import partial

import dagster as dg
import ray.data

from etl_assets.assets.common import DAILY_RAY_ASSET, RAY_KINDS, source_failures
from etl_assets.assets.metadata import definition_metadata, materialize_result, same_columns
from etl_assets.assets.sources import crm_customers
from etl_assets.contracts import CUSTOMERS, RAW_CUSTOMERS
from etl_assets.partitions import window_days
from etl_assets.ray_steps import JobTimer, cluster_cpus, co_locate, map_blocks, timed
from etl_assets.resources import RayResource, SourcesResource, WarehouseResource
from etl_assets.sources.crm import CrmDatabase, read_customer_versions
from etl_assets.transforms.customers import (
    ATTRIBUTES,
    CHANGED,
    clean_customers,
    mark_versions,
    scd2_rebuild,
)
from etl_assets.transforms.customers import SOURCE_COLUMNS as CUSTOMER_COLUMNS
from etl_assets.warehouse.base import WriteResult

RAW_LINEAGE = {
    **same_columns("crm_customers", ATTRIBUTES),
    "updated_date": [("crm_customers", "updated_at")],
}
CUSTOMERS_LINEAGE = {
    **same_columns("raw_customers", ATTRIBUTES),
    "valid_from": [("raw_customers", "updated_at")],
    "valid_to": [("raw_customers", "updated_at"), ("raw_customers", "customer_id")],
    "is_current": [("raw_customers", "updated_at"), ("raw_customers", "customer_id")],
}


@dg.asset(
    deps=[crm_customers],
    group_name="staging",
    kinds=RAY_KINDS,
    **DAILY_RAY_ASSET,
    metadata=definition_metadata(RAW_CUSTOMERS, RAW_LINEAGE),
)
def raw_customers(
    context: dg.AssetExecutionContext,
    ray_cluster: RayResource,
    sources: SourcesResource,
    warehouse: WarehouseResource,
) -> dg.MaterializeResult:
    """Customer versions whose `updated_at` (UTC) falls on the partition's day, cleaned: email
    lower-cased and stripped, phone reduced to digits, exact duplicate rows collapsed.
    Re-running a day replaces exactly that day's rows."""
    days = window_days(context)
    start = datetime.combine(days[0], datetime.min.time())
    end = datetime.combine(days[-1] + timedelta(days=1), datetime.min.time())
    backend = warehouse.backend()
    with source_failures(), timed() as timer:
        crm = CrmDatabase(sources.crm_url)
        ignored = crm.check_table("customers", CUSTOMER_COLUMNS)
        versions = read_customer_versions(crm, start, end, cluster_cpus())
        cleaned = co_locate(versions, "customer_id", clean_customers)
        result = backend.replace_window(cleaned, [RAW_CUSTOMERS], days).tables[RAW_CUSTOMERS.name]
    if ignored:
        context.log.warning(f"CRM table customers: columns not in the contract were ignored: {ignored}")
    return materialize_result(
        context,
        RAW_CUSTOMERS,
        result,
        timer,
        RAW_LINEAGE,
        source_columns_ignored=dg.MetadataValue.json(ignored),
    )


@dg.asset(
    deps=[raw_customers],
    group_name="staging",
    kinds=RAY_KINDS,
    **DAILY_RAY_ASSET,
    metadata=definition_metadata(CUSTOMERS, CUSTOMERS_LINEAGE),
)
def customers(
    context: dg.AssetExecutionContext,
    ray_cluster: RayResource,
    warehouse: WarehouseResource,
) -> dg.MaterializeResult:
    """SCD type 2 customer dimension, like a dbt snapshot: one row per customer version with
    `valid_from` (its `updated_at`), `valid_to` (the next version's `updated_at`, null for the
    current one) and `is_current`. A run adds its days' versions to the existing ones (a version
    with the same (customer_id, valid_from) replaces the one held) and rebuilds the validity of
    every customer, so loading any set of days, in any order, any number of times, gives the same
    table. `merged_rows` counts the rows of the customers the days touched; days without a
    version leave the table as it is, unwritten."""
    days = window_days(context)
    backend = warehouse.backend()
    if backend.exists(CUSTOMERS) and not sum(backend.partition_row_counts(RAW_CUSTOMERS, days).values()):
        # The rebuild would write the table it read (the dimension is a function of its versions).
        context.log.info("raw_customers holds no version of these days: customers is unchanged")
        unchanged = WriteResult(CUSTOMERS.name, backend.location(CUSTOMERS), 0, backend.row_count(CUSTOMERS))
        return materialize_result(context, CUSTOMERS, unchanged, JobTimer(), CUSTOMERS_LINEAGE, merged_rows=0)
    with source_failures(), timed() as timer:
        incoming = map_blocks(
            backend.read(RAW_CUSTOMERS, days, ATTRIBUTES), partial(mark_versions, incoming=True)
        )
        # Every customer's rows are rebuilt from the table's versions and the days': Delta rewrites
        # the table from the workers, a SQL warehouse merges the changed customers' rows.
        result = backend.rebuild(CUSTOMERS, partial(scd2_dimension, incoming), CHANGED, ATTRIBUTES)
    return materialize_result(
        context, CUSTOMERS, result, timer, CUSTOMERS_LINEAGE, merged_rows=result.rows_written
    )


def scd2_dimension(incoming: ray.data.Dataset, existing: ray.data.Dataset | None) -> ray.data.Dataset:
    """The dimension's rows from the incoming versions and the table's (``existing``, None before
    the first load), each customer's versions meeting in one task."""
    versions = [incoming]
    if existing is not None:
        marked = map_blocks(existing, partial(mark_versions, incoming=False))
        versions.append(marked)
    return co_locate(versions, "customer_id", scd2_rebuild)
