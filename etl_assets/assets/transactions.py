"""Transactions: change data capture from the CRM by `updated_at` watermark, merged by key."""

from datetime import UTC, datetime, timedelta
from functools import partial

import dagster as dg
import pyarrow.compute as pc
from pydantic import Field

from etl_assets.assets.common import RAY_KINDS, RAY_POOL, RAY_RETRY, source_failures
from etl_assets.assets.metadata import definition_metadata, materialize_result, same_columns
from etl_assets.assets.sources import crm_transactions
from etl_assets.contracts import TRANSACTIONS
from etl_assets.ray_steps import cluster_cpus, map_blocks, timed
from etl_assets.resources import RayResource, SourcesResource, WarehouseResource
from etl_assets.sources.crm import CrmDatabase, read_transaction_changes
from etl_assets.transforms.transactions import SOURCE_COLUMNS, prepare_transactions
from etl_assets.transforms.transactions import SOURCE_COLUMNS as TRANSACTION_COLUMNS

WATERMARK = "watermark"
LINEAGE = {
    **same_columns("crm_transactions", SOURCE_COLUMNS),
    "transaction_month": [("crm_transactions", "transaction_date")],
    "is_refund": [("crm_transactions", "amount")],
}


class TransactionsLoad(dg.Config):
    full_refresh: bool = Field(
        default=False, description="Reload every transaction and rewrite the table in one commit."
    )
    overlap_seconds: int = Field(
        default=300,
        description="Re-read this far behind the watermark, for source commits that land late "
        "with an older updated_at. Re-read rows change nothing: the merge keeps the newer version.",
    )


def last_watermark(context: dg.AssetExecutionContext) -> datetime | None:
    """The watermark recorded by the last successful materialization of this asset."""
    event = context.instance.get_latest_materialization_event(context.asset_key)
    if event is None or event.asset_materialization is None:
        return None
    value = event.asset_materialization.metadata.get(WATERMARK)
    return datetime.fromisoformat(value.value) if value is not None and value.value else None


@dg.asset(
    deps=[crm_transactions],
    group_name="staging",
    # The CDC schedule runs every 15 minutes when it is on.
    freshness_policy=dg.FreshnessPolicy.time_window(
        fail_window=timedelta(hours=1), warn_window=timedelta(minutes=30)
    ),
    kinds=RAY_KINDS,
    retry_policy=RAY_RETRY,
    pool=RAY_POOL,
    metadata=definition_metadata(TRANSACTIONS, LINEAGE),
)
def transactions(
    context: dg.AssetExecutionContext,
    config: TransactionsLoad,
    ray_cluster: RayResource,
    sources: SourcesResource,
    warehouse: WarehouseResource,
) -> dg.MaterializeResult:
    """The latest version of every CRM transaction, with `transaction_month` (YYYY-MM),
    `is_refund` (amount < 0) and `processed_at`. Incremental: each run reads only rows whose
    `updated_at` is past the last run's watermark (less a small overlap) and upserts them by
    `transaction_id`, never replacing a newer version by an older one. The first run, or
    `full_refresh`, loads everything."""
    backend = warehouse.backend()
    previous = last_watermark(context)
    full = config.full_refresh or previous is None or not backend.exists(TRANSACTIONS)
    since = None if full else (previous - timedelta(seconds=config.overlap_seconds)).replace(tzinfo=None)
    processed_at = datetime.now(UTC)
    crm = CrmDatabase(sources.crm_url)
    with source_failures(), timed() as timer:
        ignored = crm.check_table("transactions", TRANSACTION_COLUMNS)
        changes = map_blocks(
            read_transaction_changes(crm, since, cluster_cpus()),
            partial(prepare_transactions, processed_at=processed_at),
        )
        if full:
            result = backend.overwrite(changes, TRANSACTIONS)
        else:
            result = backend.merge(changes, TRANSACTIONS, update_if="updated_at")
    newest = [
        pc.max(b.column("updated_at")).as_py() for b in backend.scan(TRANSACTIONS, columns=["updated_at"])
    ]
    newest = [n for n in newest if n is not None]
    watermark = max(newest) if newest else previous
    if ignored:
        context.log.warning(f"CRM table transactions: columns not in the contract were ignored: {ignored}")
    return materialize_result(
        context,
        TRANSACTIONS,
        result,
        timer,
        LINEAGE,
        rows_read=result.rows_written,
        source_columns_ignored=dg.MetadataValue.json(ignored),
        full_refresh=full,
        read_since=since.isoformat() + "+00:00" if since else "",
        previous_watermark=previous.isoformat() if previous else "",
        **{WATERMARK: watermark.isoformat() if watermark else ""},
    )
