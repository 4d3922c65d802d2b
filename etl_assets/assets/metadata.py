"""Materialization metadata shared by every asset: row counts, schema, lineage, location, Ray timings."""

from collections.abc import Mapping, Sequence

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


def rule_metadata(written: ReplaceResult, partition_values: Sequence[str]) -> dict:
    """Rows that broke each contract rule in this write: totals and per partition."""
    per_partition = {
        p: rule_counts_from(
            {name: counts.get(p, 0) for name, counts in written.other_counts_per_partition.items()}
        )
        for p in partition_values
    }
    return {
        "rule_failures": dg.MetadataValue.json(rule_counts_from(written.other_counts)),
        "rule_failures_per_partition": dg.MetadataValue.json(per_partition),
    }


def write_metadata(
    contract: TableContract,
    result: WriteResult,
    timer: JobTimer,
    lineage: ColumnSources,
    rows_processed: int | None = None,
    **extra: object,
) -> dict:
    processed = result.rows_written if rows_processed is None else rows_processed
    metadata = {
        **definition_metadata(contract, lineage),
        "dagster/row_count": result.table_row_count,
        "dagster/partition_row_count": result.rows_written,
        "dagster/uri": result.location,
        "rows_written": result.rows_written,
        "ray/wall_seconds": timer.seconds,
        "ray/rows_per_second": timer.rate(processed),
    }
    if result.version is not None:
        metadata["table_version"] = result.version
    if result.rows_per_day:
        metadata["rows_per_day"] = dg.MetadataValue.json(dict(result.rows_per_day))
    metadata.update(extra)
    return metadata
