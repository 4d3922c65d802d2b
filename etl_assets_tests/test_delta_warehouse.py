"""The Delta backend with real Ray and real Delta tables."""

from datetime import date

import pyarrow as pa
import pytest
import ray.data
from deltalake import DeltaTable

from etl_assets.contracts import Column, TableContract
from etl_assets.warehouse.delta import DeltaWarehouse

DAILY = TableContract(
    name="daily",
    columns=(
        Column("id", pa.int64(), "key", nullable=False),
        Column("value", pa.float64(), "value"),
        Column("day", pa.date32(), "partition", nullable=False),
    ),
    keys=("id",),
    partition_column="day",
)


def rows(ids, days, value=1.0) -> pa.Table:
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "value": pa.array([value] * len(ids)),
            "day": pa.array(days, pa.date32()),
        }
    )


def content(warehouse: DeltaWarehouse, contract=DAILY) -> list[dict]:
    table = DeltaTable(warehouse.location(contract)).to_pyarrow_table()
    return sorted(table.select(contract.column_names).to_pylist(), key=lambda r: r["id"])


D1, D2, D3 = date(2024, 1, 1), date(2024, 1, 2), date(2024, 1, 3)


def test_replace_window_replaces_exactly_its_days_in_one_commit(tmp_path):
    wh = DeltaWarehouse(str(tmp_path))
    first = ray.data.from_arrow([rows([1, 2], [D1, D1]), rows([3], [D2]), rows([4], [D3])])
    wh.replace_window(first, [DAILY], [D1, D2, D3])
    version = DeltaTable(wh.location(DAILY)).version()
    # Replace D2 (now two rows) and D3 (now empty); D1 is left alone.
    result = wh.replace_window(ray.data.from_arrow(rows([5, 6], [D2, D2], 2.0)), [DAILY], [D2, D3])
    assert DeltaTable(wh.location(DAILY)).version() == version + 1
    assert [(r["id"], r["day"]) for r in content(wh)] == [(1, D1), (2, D1), (5, D2), (6, D2)]
    assert result.tables["daily"].rows_per_day == {"2024-01-02": 2, "2024-01-03": 0}
    assert result.tables["daily"].table_row_count == 4


def test_rows_outside_the_window_are_refused_and_the_table_is_unchanged(tmp_path):
    wh = DeltaWarehouse(str(tmp_path))
    wh.replace_window(ray.data.from_arrow(rows([1], [D1])), [DAILY], [D1])
    version = DeltaTable(wh.location(DAILY)).version()
    with pytest.raises(
        Exception, match="daily: rows for 2024-01-03 fall outside the partitions being replaced"
    ):
        wh.replace_window(ray.data.from_arrow(rows([7, 8], [D1, D3])), [DAILY], [D1])
    assert DeltaTable(wh.location(DAILY)).version() == version
    assert content(wh) == [{"id": 1, "value": 1.0, "day": D1}]


def _fail_on_id_13(batch: pa.Table) -> pa.Table:
    if 13 in batch.column("id").to_pylist():
        raise RuntimeError("worker lost mid-run")
    return batch


def test_a_run_failing_midway_leaves_the_previous_version(tmp_path):
    wh = DeltaWarehouse(str(tmp_path))
    wh.replace_window(ray.data.from_arrow(rows([1, 2], [D1, D2])), [DAILY], [D1, D2])
    before = content(wh)
    version = DeltaTable(wh.location(DAILY)).version()
    blocks = [rows([10 + i], [D1]) for i in range(6)]
    failing = ray.data.from_arrow(blocks).map_batches(_fail_on_id_13, batch_format="pyarrow")
    with pytest.raises(Exception, match="worker lost mid-run"):
        wh.replace_window(failing, [DAILY], [D1, D2])
    assert DeltaTable(wh.location(DAILY)).version() == version
    assert content(wh) == before


def test_merge_upserts_by_key_and_is_idempotent(tmp_path):
    contract = TableContract(name="dim", columns=DAILY.columns[:2], keys=("id",))
    wh = DeltaWarehouse(str(tmp_path))
    wh.merge(ray.data.from_arrow(rows([1, 2], [D1, D1]).select(["id", "value"])), contract)
    update = rows([2, 3], [D1, D1], 5.0).select(["id", "value"])
    wh.merge(ray.data.from_arrow(update), contract)
    wh.merge(ray.data.from_arrow(update), contract)
    assert content(wh, contract) == [
        {"id": 1, "value": 1.0},
        {"id": 2, "value": 5.0},
        {"id": 3, "value": 5.0},
    ]


def test_read_returns_only_the_requested_days_with_their_types(tmp_path):
    wh = DeltaWarehouse(str(tmp_path))
    wh.replace_window(ray.data.from_arrow(rows([1, 2, 3], [D1, D2, D3])), [DAILY], [D1, D2, D3])
    ds = wh.read(DAILY, [D2, D3])
    got = sorted(ds.take_all(), key=lambda r: r["id"])
    assert ds.schema().names == DAILY.column_names
    assert [(r["id"], r["day"]) for r in got] == [(2, D2), (3, D3)]
    assert wh.read(DAILY, [date(2024, 2, 1)]).count() == 0


def test_existing_table_with_another_type_is_refused_naming_the_column(tmp_path):
    wh = DeltaWarehouse(str(tmp_path))
    wh.replace_window(ray.data.from_arrow(rows([1], [D1])), [DAILY], [D1])
    retyped = TableContract(
        name="daily",
        columns=(DAILY.columns[0], Column("value", pa.string(), "now text"), DAILY.columns[2]),
        partition_column="day",
    )
    with pytest.raises(ValueError, match="column value is double, expected string"):
        wh.replace_window(ray.data.from_arrow(rows([1], [D1])), [retyped], [D1])


def test_merge_keeps_newer_versions_and_deletes_unmatched_rows_only_in_scope(tmp_path):
    contract = TableContract(name="dim", columns=DAILY.columns, keys=("id",))
    wh = DeltaWarehouse(str(tmp_path))
    wh.merge(ray.data.from_arrow(rows([1, 2, 3], [D1, D2, D3], 1.0)), contract)
    # An older version (smaller value) must not replace a newer one when updating on "value".
    older = pa.concat_tables([rows([1], [D1], 0.5), rows([2], [D2], 9.0)])
    wh.merge(ray.data.from_arrow(older), contract, update_if="value")
    assert [(r["id"], r["value"]) for r in content(wh, contract)] == [(1, 1.0), (2, 9.0), (3, 1.0)]
    # The source is the whole truth for days D1 and D2: id 1 (D1) disappears, id 3 (D3) stays.
    wh.merge(ray.data.from_arrow(rows([2], [D2], 9.0)), contract, delete_unmatched_in=("day", [D1, D2]))
    assert [r["id"] for r in content(wh, contract)] == [2, 3]
