"""The code location: every warehouse table as an asset, its checks, jobs, schedules and resources."""

import dagster as dg

from etl_assets.assets.customers import customers, raw_customers
from etl_assets.assets.events import events_and_rejects, hourly_user_metrics
from etl_assets.assets.marts import customer_orders, daily_customer_metrics
from etl_assets.assets.orders import orders_and_rejects
from etl_assets.assets.sources import SOURCE_SPECS
from etl_assets.assets.transactions import transactions
from etl_assets.automation import (
    daily_job,
    daily_schedule,
    events_job,
    events_landing_sensor,
    transactions_job,
    transactions_schedule,
)
from etl_assets.checks.rules import CHECKS
from etl_assets.quick_exit import skip_final_collection
from etl_assets.resources import RayResource, SourcesResource, warehouse_from_env

skip_final_collection()

defs = dg.Definitions(
    assets=[
        *SOURCE_SPECS,
        raw_customers,
        customers,
        orders_and_rejects,
        customer_orders,
        daily_customer_metrics,
        events_and_rejects,
        hourly_user_metrics,
        transactions,
    ],
    asset_checks=CHECKS,
    jobs=[daily_job, events_job, transactions_job],
    schedules=[daily_schedule, transactions_schedule],
    sensors=[events_landing_sensor],
    resources={
        "ray_cluster": RayResource(),
        "sources": SourcesResource(),
        "warehouse": warehouse_from_env(),
    },
    # One Ray session per run: every step of the run executes in this process.
    executor=dg.in_process_executor,
)
