"""Materialization metadata of every asset: row counts (per partition where the write knows them),
schema, lineage, location, Ray timings."""

from collections.abc import Iterator, Mapping, Sequence

import dagster as dg

from etl_assets.contracts import TableContract
from etl_assets.contracts.validation import rule_counts_from
from etl_assets.ray_steps import JobTimer
from etl_assets.warehouse.base import ReplaceResult, WriteResult

ColumnSources = Mapping[str, Sequence[tuple[str, str]]]


def column_schema(contract: TableContract) -> dg.TableSchema:
    return dg.TableSchema(
        columns=[
            dg.TableColumn(
                name=c.name,
                type=str(c.type),
                description=c.description,
                constraints=dg.TableColumnConstraints(
                    nullable=c.nullable,
                    unique=contract.keys == (c.name,),
                    other=[
                        f"{r.code}: {r.description}" + (" (warn only)" if not r.rejects else "")
                        for r in c.rules
                        if r.code != f"{c.name}.not_null"
                    ],
                ),
            )
            for c in contract.columns
        ],
        constraints=dg.TableConstraints(other=[f"{r.code}: {r.description}" for r in contract.table_rules]),
    )


def column_lineage(sources: ColumnSources) -> dg.TableColumnLineage:
    """``sources`` maps each output column to the (asset, column) pairs it is computed from."""
    return dg.TableColumnLineage(
        deps_by_column={
            column: [
                dg.TableColumnDep(asset_key=dg.AssetKey(asset), column_name=name) for asset, name in deps
            ]
            for column, deps in sources.items()
        }
    )


def same_columns(asset: str, columns: Sequence[str]) -> dict[str, list[tuple[str, str]]]:
    """Lineage of columns copied unchanged from ``asset``."""
    return {c: [(asset, c)] for c in columns}


def definition_metadata(contract: TableContract, lineage: ColumnSources) -> dict:
    """What the UI shows before the first run: the contract's columns and their lineage."""
    return {
        "dagster/column_schema": column_schema(contract),
        "dagster/column_lineage": column_lineage(lineage),
        "dagster/table_name": contract.name,
    }


def rule_failures_by_partition(written: ReplaceResult, partitions: Sequence[str]) -> dict[str, dict]:
    """Rows of each partition that broke each contract rule in this write, as metadata."""
    return {
        p: {
            "rule_failures": dg.MetadataValue.json(
                rule_counts_from(
                    {name: counts.get(p, 0) for name, counts in written.other_counts_per_partition.items()}
                )
            )
        }
        for p in partitions
    }


def materialize_result(
    context: dg.AssetExecutionContext,
    contract: TableContract,
    result: WriteResult,
    timer: JobTimer,
    lineage: ColumnSources,
    rows_processed: int | None = None,
    per_partition: Mapping[str, Mapping[str, object]] | None = None,
    **extra: object,
) -> dg.MaterializeResult:
    """The materialization of ``contract``'s table after one write.

    A write that knows its rows per partition (a window replace) gives each partition's
    materialization that partition's own counts (``dagster/partition_row_count``, ``rows_written``
    and ``per_partition``), through ``add_asset_metadata``; what is true of the whole run (table,
    Ray job, ``extra``) goes on every partition. So a 30-day backfill's partition shows its own
    rows, not the run's, and no materialization carries a dict over the whole window (30
    partitions x a 30-entry dict would grow with the square of the window)."""
    processed = result.rows_written if rows_processed is None else rows_processed
    metadata = {
        **definition_metadata(contract, lineage),
        "dagster/row_count": result.table_row_count,
        "dagster/uri": result.location,
        "ray/wall_seconds": timer.seconds,
        "ray/rows_per_second": timer.rate(processed),
        **extra,
    }
    if result.version is not None:
        metadata["table_version"] = result.version
    run_keys = set(context.partition_keys) if context.assets_def.partitions_def is not None else set()
    # Counted per partition only when the counts are by this run's partition keys (a SQL merge
    # into a table with a partition column counts by column value, which need not be a key).
    counted = bool(result.rows_per_day) and set(result.rows_per_day) <= run_keys
    if not counted:
        metadata.update(
            {"dagster/partition_row_count": result.rows_written, "rows_written": result.rows_written}
        )
    per_partition = per_partition or {}
    unknown = set(per_partition) - run_keys
    if unknown:
        raise ValueError(f"{contract.name}: metadata for partitions not in this run: {sorted(unknown)}")
    for partition in sorted(set(result.rows_per_day if counted else ()) | set(per_partition)):
        own = dict(per_partition.get(partition, {}))
        if counted:
            rows = result.rows_per_day.get(partition, 0)
            own = {"dagster/partition_row_count": rows, "rows_written": rows, **own}
        context.add_asset_metadata(own, asset_key=contract.name, partition_key=partition)
    return dg.MaterializeResult(asset_key=contract.name, metadata=metadata)


def materialize_results(
    context: dg.AssetExecutionContext,
    written: ReplaceResult,
    timer: JobTimer,
    tables: Sequence[tuple[TableContract, ColumnSources]],
    rows_processed: int,
    per_partition: Mapping[str, Mapping[str, object]],
) -> Iterator[dg.MaterializeResult]:
    """One materialization per table of a load that wrote several (a table and its rejects), each
    partition with the load's ``per_partition`` accounting."""
    for contract, lineage in tables:
        yield materialize_result(
            context,
            contract,
            written.tables[contract.name],
            timer,
            lineage,
            rows_processed=rows_processed,
            per_partition=per_partition,
        )
