"""The warehouse interface, on every backend: local Delta, Delta on S3 (moto), Snowflake (fakesnow)
and BigQuery (the emulator), with real Ray. Contents are read back with each warehouse's own client."""

import json
import shutil
import uuid
from datetime import UTC, date, datetime, timedelta
from functools import partial
from pathlib import Path

import dagster as dg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import ray.data
from deltalake import DeltaTable, QueryBuilder, write_deltalake
from deltalake.transaction import AddAction

from etl_assets.contracts import Column, TableContract
from etl_assets.contracts.validation import SchemaMismatch
from etl_assets.resources import WarehouseResource
from etl_assets.warehouse.base import OutsideReplacedValues, Warehouse
from etl_assets.warehouse.delta import ConcurrentWrite, DeltaWarehouse
from etl_assets_tests.conftest import WAREHOUSE_KINDS, warehouse_on
from etl_assets_tests.emulators.servers import BIGQUERY_PROJECT
from etl_assets_tests.warehouse_readers import read_arrow

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


class Place:
    """One test's warehouse: the backend under test and the resource that configures it."""

    def __init__(self, resource: WarehouseResource):
        self.resource = resource
        self.backend: Warehouse = resource.backend()

    def content(self, contract=DAILY) -> list[dict]:
        table = read_arrow(self.resource, contract.name).select(contract.column_names)
        table = table.cast(contract.schema.remove_metadata(), safe=False) if table.num_rows else table
        return sorted(table.to_pylist(), key=lambda r: r["id"])

    def staging_left(self) -> list[str]:
        """Staging tables a write left behind (SQL backends); none may outlive a write."""
        backend = self.backend
        if self.resource.kind == "snowflake":
            found = backend.query(
                f"SELECT table_name FROM {backend.database}.INFORMATION_SCHEMA.TABLES"
                f" WHERE table_schema = '{backend.schema}'"
            )
        elif self.resource.kind == "bigquery":
            found = backend.query(
                f"SELECT table_name FROM `{backend.access.project}.{backend.access.dataset}`"
                ".INFORMATION_SCHEMA.TABLES"
            )
        else:
            return []
        return [n for n in found.column(0).to_pylist() if "__STAGE_" in n.upper()]


@pytest.fixture(params=WAREHOUSE_KINDS)
def place(request, tmp_path) -> Place:
    return Place(warehouse_on(request.param, request, tmp_path))


D1, D2, D3 = date(2024, 1, 1), date(2024, 1, 2), date(2024, 1, 3)


def test_replace_window_replaces_exactly_its_days(place):
    wh = place.backend
    first = ray.data.from_arrow([rows([1, 2], [D1, D1]), rows([3], [D2]), rows([4], [D3])])
    before = wh.replace_window(first, [DAILY], [D1, D2, D3]).tables["daily"].version
    # Replace D2 (now two rows) and D3 (now empty); D1 is left alone.
    result = wh.replace_window(ray.data.from_arrow(rows([5, 6], [D2, D2], 2.0)), [DAILY], [D2, D3])
    assert [(r["id"], r["day"]) for r in place.content()] == [(1, D1), (2, D1), (5, D2), (6, D2)]
    assert result.tables["daily"].rows_per_day == {"2024-01-02": 2, "2024-01-03": 0}
    assert result.tables["daily"].table_row_count == 4
    assert wh.partition_row_counts(DAILY) == {"2024-01-01": 2, "2024-01-02": 2}
    # Only the asked days are counted; a day without rows is left out.
    assert wh.partition_row_counts(DAILY, [D3, D2]) == {"2024-01-02": 2}
    assert wh.partition_row_counts(DAILY, []) == {}
    # A window's size before reading it: the asked days, or the whole table.
    assert wh.window_row_count(DAILY, [D3, D2]) == 2
    assert wh.window_row_count(DAILY, None) == 4
    assert wh.window_row_count(DAILY, []) == 0
    assert wh.partitions(DAILY) == ["2024-01-01", "2024-01-02"]
    assert place.staging_left() == []
    if place.resource.kind.startswith("delta"):
        # One commit per replace.
        assert result.tables["daily"].version == wh._table(DAILY).version() == before + 1


def test_rows_outside_the_window_are_refused_and_the_table_is_unchanged(place):
    wh = place.backend
    wh.replace_window(ray.data.from_arrow(rows([1], [D1])), [DAILY], [D1])
    with pytest.raises(
        Exception, match="daily: rows for 2024-01-03 fall outside the partitions being replaced"
    ):
        wh.replace_window(ray.data.from_arrow(rows([7, 8], [D1, D3])), [DAILY], [D1])
    assert place.content() == [{"id": 1, "value": 1.0, "day": D1}]
    assert place.staging_left() == []


def _fail_on_id_13(batch: pa.Table) -> pa.Table:
    if 13 in batch.column("id").to_pylist():
        raise RuntimeError("worker lost mid-run")
    return batch


def test_a_run_failing_midway_leaves_the_table_as_it_was(place):
    wh = place.backend
    wh.replace_window(ray.data.from_arrow(rows([1, 2], [D1, D2])), [DAILY], [D1, D2])
    before = place.content()
    version = getattr(wh, "_table", None) and wh._table(DAILY).version()
    blocks = [rows([10 + i], [D1]) for i in range(6)]
    failing = ray.data.from_arrow(blocks).map_batches(_fail_on_id_13, batch_format="pyarrow")
    with pytest.raises(Exception, match="worker lost mid-run"):
        wh.replace_window(failing, [DAILY], [D1, D2])
    assert place.content() == before
    if version is not None:
        assert wh._table(DAILY).version() == version
    assert place.staging_left() == []


def test_a_failed_first_write_leaves_no_table(place):
    failing = ray.data.from_arrow([rows([13], [D1])]).map_batches(_fail_on_id_13, batch_format="pyarrow")
    with pytest.raises(Exception, match="worker lost mid-run"):
        place.backend.replace_window(failing, [DAILY], [D1])
    assert not place.backend.exists(DAILY)
    assert place.staging_left() == []


def test_merge_upserts_by_key_and_is_idempotent(place):
    contract = TableContract(name="dim", columns=DAILY.columns[:2], keys=("id",))
    wh = place.backend
    wh.merge(ray.data.from_arrow(rows([1, 2], [D1, D1]).select(["id", "value"])), contract)
    update = rows([2, 3], [D1, D1], 5.0).select(["id", "value"])
    wh.merge(ray.data.from_arrow(update), contract)
    result = wh.merge(ray.data.from_arrow(update), contract)
    assert place.content(contract) == [
        {"id": 1, "value": 1.0},
        {"id": 2, "value": 5.0},
        {"id": 3, "value": 5.0},
    ]
    assert result.rows_written == 2 and result.table_row_count == 3
    # A table without partitions: its window is the whole table, whatever days are asked.
    assert wh.window_row_count(contract, [D1]) == wh.window_row_count(contract, None) == 3


def with_changed(ids, values, changed) -> ray.data.Dataset:
    return ray.data.from_arrow(
        pa.table(
            {
                "id": pa.array(ids, pa.int64()),
                "value": pa.array(values, pa.float64()),
                "changed": pa.array(changed, pa.bool_()),
            }
        )
    )


DIM = TableContract(name="dim", columns=DAILY.columns[:2], keys=("id",))


def rows_given(ds: ray.data.Dataset, seen: list):
    """A ``build`` for ``rebuild`` that records the table's rows it was given and returns ``ds``."""

    def build(existing):
        if existing is None:
            seen.append(None)
        else:
            seen.append((existing.schema().names, sorted(r["id"] for r in existing.take_all())))
        return ds

    return build


def test_rebuild_leaves_exactly_the_rows_given_and_counts_the_changed_ones(place):
    wh, seen = place.backend, []
    first = wh.rebuild(DIM, rows_given(with_changed([1, 2, 3], [1.0] * 3, [True] * 3), seen), "changed")
    assert (first.rows_written, first.table_row_count) == (3, 3)
    # 2 updated and 4 new; 1 and 3 given as the table holds them.
    again = with_changed([1, 2, 3, 4], [1.0, 5.0, 1.0, 7.0], [False, True, False, True])
    second = wh.rebuild(DIM, rows_given(again, seen), "changed", columns=["id"])
    assert place.content(DIM) == [
        {"id": 1, "value": 1.0},
        {"id": 2, "value": 5.0},
        {"id": 3, "value": 1.0},
        {"id": 4, "value": 7.0},
    ]
    assert (second.rows_written, second.table_row_count) == (2, 4)
    assert seen == [None, (["id"], [1, 2, 3])]
    # A row the contract refuses fails the rebuild and leaves the table as it was.
    refused = ray.data.from_arrow(
        pa.table(
            {
                "id": pa.array([1, None], pa.int64()),
                "value": pa.array([1.0, 2.0]),
                "changed": pa.array([False, True]),
            }
        )
    )
    with pytest.raises(Exception, match=r"dim\.id"):
        wh.rebuild(DIM, lambda existing: refused, "changed")
    assert [r["id"] for r in place.content(DIM)] == [1, 2, 3, 4]
    assert place.staging_left() == []


@pytest.fixture
def delta_place(request, tmp_path) -> Place:
    return Place(warehouse_on("delta", request, tmp_path))


def test_a_delta_rebuild_is_one_overwrite_from_the_workers_files(delta_place):
    wh = delta_place.backend
    wh.rebuild(DIM, lambda existing: with_changed([1, 2], [1.0, 1.0], [True, True]), "changed")
    wh.rebuild(DIM, lambda existing: with_changed([1, 2], [1.0, 3.0], [False, True]), "changed")
    last = DeltaTable(wh.location(DIM)).history(1)[0]
    # The workers wrote both rows again (a merge would have rewritten only the changed row's file).
    assert last["operation"] == "WRITE" and last["operationParameters"]["mode"] == "Overwrite"
    assert DeltaTable(wh.location(DIM)).version() == 1  # the first load was the table's first commit


def test_a_delta_merge_into_no_table_is_its_first_commit_and_later_ones_merge(delta_place):
    wh = delta_place.backend
    first = wh.merge(ray.data.from_arrow(rows([1, 2], [D1, D1]).select(["id", "value"])), DIM)
    assert (first.rows_written, first.table_row_count, first.version) == (2, 2, 0)
    wh.merge(ray.data.from_arrow(rows([2, 3], [D1, D1], 5.0).select(["id", "value"])), DIM)
    operations = [c["operation"] for c in DeltaTable(wh.location(DIM)).history()]
    assert operations == ["MERGE", "CREATE TABLE"]
    assert delta_place.content(DIM) == [
        {"id": 1, "value": 1.0},
        {"id": 2, "value": 5.0},
        {"id": 3, "value": 5.0},
    ]


def test_a_delta_window_replace_commits_to_a_table_another_run_created_meanwhile(delta_place):
    wh = delta_place.backend
    other = DeltaWarehouse(wh.root)
    write_files = wh._write_files

    def while_another_run_loads_d2(*args):
        other.replace_window(ray.data.from_arrow(rows([2], [D2])), [DAILY], [D2])
        return write_files(*args)

    wh._write_files = while_another_run_loads_d2
    wh.replace_window(ray.data.from_arrow(rows([1], [D1])), [DAILY], [D1])
    assert [(r["id"], r["day"]) for r in delta_place.content()] == [(1, D1), (2, D2)]


def while_another_run(wh: DeltaWarehouse, commit) -> None:
    """Make ``wh``'s next write run ``commit`` (another run's) after its workers wrote the files."""
    write_files = wh._write_files

    def write_then_let_the_other_commit(*args):
        files = write_files(*args)
        commit()
        return files

    wh._write_files = write_then_let_the_other_commit


def test_a_delta_merge_into_no_table_refuses_a_table_another_run_created_meanwhile(delta_place):
    wh, other = delta_place.backend, DeltaWarehouse(delta_place.backend.root)
    while_another_run(
        wh, lambda: other.merge(with_changed([1], [9.0], [True]).drop_columns(["changed"]), DIM)
    )
    with pytest.raises(ConcurrentWrite, match="dim: another commit landed .* started from no table"):
        wh.merge(with_changed([1, 2], [1.0, 2.0], [True, True]).drop_columns(["changed"]), DIM)
    assert delta_place.content(DIM) == [{"id": 1, "value": 9.0}]


def test_a_delta_overwrite_refuses_a_commit_made_while_it_ran(delta_place):
    wh, other = delta_place.backend, DeltaWarehouse(delta_place.backend.root)
    wh.overwrite(ray.data.from_arrow(rows([1], [D1])), DAILY)
    while_another_run(wh, lambda: other.append(ray.data.from_arrow(rows([2], [D2])), DAILY))
    with pytest.raises(ConcurrentWrite, match="daily: another commit landed .* started from version 0"):
        wh.overwrite(ray.data.from_arrow(rows([3], [D3])), DAILY)
    assert [r["id"] for r in delta_place.content()] == [1, 2]


def test_a_delta_merge_into_no_table_refuses_an_empty_scope_and_creates_nothing(delta_place):
    wh = delta_place.backend
    with pytest.raises(ValueError, match="dim: delete_unmatched_in needs at least one value"):
        wh.merge(
            ray.data.from_arrow(rows([1], [D1]).select(["id", "value"])), DIM, delete_unmatched_in=("id", [])
        )
    assert not wh.exists(DIM)


def test_a_delta_rebuild_refuses_to_overwrite_a_commit_made_while_it_ran(delta_place):
    wh = delta_place.backend
    wh.rebuild(DIM, lambda existing: with_changed([1], [1.0], [True]), "changed")

    def build_while_another_run_commits(existing):
        wh.merge(ray.data.from_arrow(pa.table({"id": pa.array([9], pa.int64()), "value": [9.0]})), DIM)
        return with_changed([1, 2], [1.0, 2.0], [False, True])

    with pytest.raises(ConcurrentWrite, match=r"dim: another commit landed .* started from version 0"):
        wh.rebuild(DIM, build_while_another_run_commits, "changed")
    assert delta_place.content(DIM) == [{"id": 1, "value": 1.0}, {"id": 9, "value": 9.0}]

    def build_while_another_run_creates(existing):
        wh.rebuild(fresh, lambda existing: with_changed([5], [5.0], [True]), "changed")
        return with_changed([6], [6.0], [True])

    fresh = TableContract(name="fresh", columns=DAILY.columns[:2], keys=("id",))
    with pytest.raises(ConcurrentWrite, match="fresh: another commit landed .* started from no table"):
        wh.rebuild(fresh, build_while_another_run_creates, "changed")
    assert delta_place.content(fresh) == [{"id": 5, "value": 5.0}]


def test_read_returns_only_the_requested_days_with_their_types(place):
    wh = place.backend
    wh.replace_window(ray.data.from_arrow(rows([1, 2, 3], [D1, D2, D3])), [DAILY], [D1, D2, D3])
    ds = wh.read(DAILY, [D2, D3])
    got = sorted(ds.take_all(), key=lambda r: r["id"])
    assert ds.schema().base_schema == DAILY.schema
    assert [(r["id"], r["day"]) for r in got] == [(2, D2), (3, D3)]
    assert wh.read(DAILY, [date(2024, 2, 1)]).count() == 0
    scanned = pa.Table.from_batches(list(wh.scan(DAILY, [D1], ["id", "day"])))
    assert scanned.to_pylist() == [{"id": 1, "day": D1}]
    # The partition column alone, or first, or left out; each file's day is the Delta log's.
    days = pa.Table.from_batches(
        list(wh.scan(DAILY, [D1, D3], ["day"])), schema=pa.schema([DAILY.schema.field("day")])
    )
    assert sorted(days.column("day").to_pylist()) == [D1, D3]
    scanned = pa.Table.from_batches(list(wh.scan(DAILY, [D2, D3], ["day", "id"])))
    assert sorted(scanned.to_pylist(), key=lambda r: r["id"]) == [{"day": D2, "id": 2}, {"day": D3, "id": 3}]
    assert sorted(b["id"] for batch in wh.scan(DAILY, None, ["id"]) for b in batch.to_pylist()) == [1, 2, 3]


HOURS_TYPE = pa.timestamp("us", tz="UTC")
HOURS = TableContract(
    name="hours",
    columns=(
        Column("id", pa.int64(), "key", nullable=False),
        Column("hour", HOURS_TYPE, "an hour"),
        Column("batch", pa.string(), "partition", nullable=False),
    ),
    keys=("id", "hour"),
    partition_column="batch",
)
H0 = datetime(2024, 1, 1, tzinfo=UTC)


def at_hours(ids, hours, batch) -> pa.Table:
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "hour": pa.array([None if h is None else H0 + timedelta(hours=h) for h in hours], HOURS_TYPE),
            "batch": pa.array([batch] * len(ids)),
        }
    )


def ids_read(wh, partitions=None, hours=()) -> list[int]:
    wanted = [H0 + timedelta(hours=h) for h in hours]
    ds = wh.read(HOURS, partitions, ["id"], where_in=("hour", wanted))
    return sorted(r["id"] for r in ds.take_all())


def test_read_where_in_returns_exactly_the_rows_holding_one_of_the_values(place):
    wh = place.backend
    a = at_hours([1, 2, 3, 4], [0, 1, 2, None], "a")
    b = at_hours([5, 6, 7], [2, 9, 10], "b")
    wh.replace_partitions(ray.data.from_arrow(pa.concat_tables([a, b])), [HOURS], ["a", "b"])
    assert ids_read(wh, hours=[2]) == [3, 5]
    assert ids_read(wh, hours=[1, 9, 30]) == [2, 6]
    assert ids_read(wh, ["b"], hours=[1, 2]) == [5]
    assert ids_read(wh, hours=[30]) == []
    assert ids_read(wh, hours=[]) == []
    # A naive datetime is UTC on every backend, a null matches nothing, an integer column prunes too.
    by_naive = wh.read(HOURS, columns=["id"], where_in=("hour", [datetime(2024, 1, 1, 9), None]))
    assert [r["id"] for r in by_naive.take_all()] == [6]
    by_id = wh.read(HOURS, columns=["id"], where_in=("id", [3, 6, 99]))
    assert sorted(r["id"] for r in by_id.take_all()) == [3, 6]
    with pytest.raises(
        ValueError, match="hours: 'batch' is its partition column: select its rows by partition"
    ):
        wh.read(HOURS, where_in=("batch", ["a"]))
    with pytest.raises(ValueError, match="hours has no column 'nope' to select rows by"):
        wh.read(HOURS, where_in=("nope", [1]))


def test_read_where_in_by_a_column_without_bounds_reads_every_file(place):
    """Delta records no bounds for floats, deltalake's own merge does: neither kind of file may
    be skipped by a comparison that does not hold for floats."""
    wh = place.backend
    wh.merge(ray.data.from_arrow(pa.table({"id": pa.array([1, 2], pa.int64()), "value": [1.5, 2.5]})), DIM)
    wh.merge(ray.data.from_arrow(pa.table({"id": pa.array([2, 3], pa.int64()), "value": [5.0, 1.5]})), DIM)
    got = wh.read(DIM, where_in=("value", [1.5, None])).take_all()
    assert sorted(r["id"] for r in got) == [1, 3]


HOURLY = TableContract(name="hourly", columns=HOURS.columns[:2], keys=("id", "hour"))


def hourly_rows(ids, hours) -> pa.Table:
    return at_hours(ids, hours, "").drop_columns(["batch"])


def content_by_hour(place) -> list[tuple[int, datetime]]:
    return [(r["id"], r["hour"]) for r in place.content(HOURLY)]


def at(*pairs) -> list[tuple[int, datetime]]:
    return [(i, H0 + timedelta(hours=h)) for i, h in pairs]


def test_replace_where_makes_the_rows_of_its_values_exactly_the_rows_given(place):
    wh = place.backend
    first = wh.replace_where(
        ray.data.from_arrow(hourly_rows([1, 2, 3], [0, 1, 25])),
        HOURLY,
        "hour",
        [H0, H0 + timedelta(hours=1), H0 + timedelta(hours=25)],
    )
    assert (first.rows_written, first.table_row_count) == (3, 3)
    # Hour 1 loses id 2 and gains id 4; hour 2 is new; hours 0 and 25 are not among the values.
    second = wh.replace_where(
        ray.data.from_arrow(hourly_rows([4, 5], [1, 2])),
        HOURLY,
        "hour",
        [H0 + timedelta(hours=h) for h in (1, 2)],
    )
    assert (second.rows_written, second.table_row_count) == (2, 4)
    assert content_by_hour(place) == at((1, 0), (3, 25), (4, 1), (5, 2))
    # A value given with no rows empties it.
    wh.replace_where(ray.data.from_arrow(hourly_rows([], [])), HOURLY, "hour", [H0 + timedelta(hours=25)])
    assert content_by_hour(place) == at((1, 0), (4, 1), (5, 2))
    with pytest.raises(
        OutsideReplacedValues, match=r"hourly: a row with hour = .*2024, 1, 1, 9, 0.* is outside"
    ):
        wh.replace_where(
            ray.data.from_arrow(hourly_rows([6, 7], [1, 9])), HOURLY, "hour", [H0 + timedelta(hours=1)]
        )
    assert content_by_hour(place) == at((1, 0), (4, 1), (5, 2))
    assert place.staging_left() == []
    with pytest.raises(
        ValueError, match=r"dim: replace_where needs a column of the key \('id',\), not 'value'"
    ):
        wh.replace_where(ray.data.from_arrow(pa.table({"id": [1], "value": [1.0]})), DIM, "value", [1.0])


def test_replace_where_on_a_partitioned_table_keeps_each_row_in_its_partition(place):
    wh = place.backend
    a, b = at_hours([1, 2], [0, 1], "a"), at_hours([3, 4], [1, 2], "b")
    wh.replace_partitions(ray.data.from_arrow(pa.concat_tables([a, b])), [HOURS], ["a", "b"])
    wh.replace_where(ray.data.from_arrow(at_hours([5], [1], "c")), HOURS, "hour", [H0 + timedelta(hours=1)])
    got = sorted((r["id"], r["hour"], r["batch"]) for r in wh.read(HOURS).take_all())
    assert got == [(1, H0, "a"), (4, H0 + timedelta(hours=2), "b"), (5, H0 + timedelta(hours=1), "c")]
    assert wh.partition_row_counts(HOURS) == {"a": 1, "b": 1, "c": 1}


def test_a_delta_replace_where_rewrites_only_the_days_of_its_values(delta_place):
    wh = delta_place.backend
    # Three days of hours into no table: the workers' files are a day each.
    wh.replace_where(
        ray.data.from_arrow(hourly_rows([1, 2, 3, 4], [0, 5, 30, 60])),
        HOURLY,
        "hour",
        [H0 + timedelta(hours=h) for h in (0, 5, 30, 60)],
    )
    files = DeltaTable(wh.location(HOURLY)).file_uris()
    assert len(files) == 3
    thirty = [H0 + timedelta(hours=30)]
    wh.replace_where(ray.data.from_arrow(hourly_rows([5], [30])), HOURLY, "hour", thirty)
    kept = set(DeltaTable(wh.location(HOURLY)).file_uris()) & set(files)
    assert len(kept) == 2  # the first and third days' files are untouched
    assert content_by_hour(delta_place) == at((1, 0), (2, 5), (4, 60), (5, 30))
    # Hour 3 lies within the first day's file's range but none of its rows: the file stays.
    before = set(DeltaTable(wh.location(HOURLY)).file_uris())
    wh.replace_where(ray.data.from_arrow(hourly_rows([6], [3])), HOURLY, "hour", [H0 + timedelta(hours=3)])
    after = set(DeltaTable(wh.location(HOURLY)).file_uris())
    assert before < after and len(after - before) == 1
    assert content_by_hour(delta_place) == at((1, 0), (2, 5), (4, 60), (5, 30), (6, 3))


def test_a_delta_replace_where_refuses_a_commit_made_while_it_rewrote(delta_place):
    """Another run's rows of the same hours, committed meanwhile, would survive the rewrite."""
    wh, other = delta_place.backend, DeltaWarehouse(delta_place.backend.root)
    one = [H0 + timedelta(hours=1)]
    wh.replace_where(ray.data.from_arrow(hourly_rows([1], [1])), HOURLY, "hour", one)
    while_another_run(
        wh, lambda: other.replace_where(ray.data.from_arrow(hourly_rows([2], [1])), HOURLY, "hour", one)
    )
    with pytest.raises(ConcurrentWrite, match="hourly: another commit landed .* started from version 0"):
        wh.replace_where(ray.data.from_arrow(hourly_rows([3], [1])), HOURLY, "hour", one)
    assert content_by_hour(delta_place) == at((2, 1))


def test_delta_files_record_bounds_that_hold_every_value_and_deltalake_reads_by_them(delta_place):
    """Timestamps keep microseconds, Delta's statistics milliseconds: the least is rounded down and
    the greatest up, so a reader that skips files by them cannot miss a file's first or last
    rows; deltalake's own engine (DataFusion) finds both through them."""
    wh = delta_place.backend
    last = datetime(2024, 1, 1, 5, 0, 0, 999_999, tzinfo=UTC)
    first = datetime(2023, 12, 31, 23, 59, 59, 998_500, tzinfo=UTC)
    table = pa.table(
        {"id": pa.array([1, 2, 3], pa.int64()), "hour": pa.array([first, None, last], HOURS_TYPE)}
    ).append_column("batch", pa.array(["a"] * 3))
    wh.replace_partitions(ray.data.from_arrow(table), [HOURS], ["a"])
    log = Path(wh.location(HOURS), "_delta_log", "00000000000000000000.json").read_text().splitlines()
    (stats,) = [json.loads(json.loads(line)["add"]["stats"]) for line in log if '"add"' in line]
    assert stats["minValues"] == {"id": 1, "hour": "2023-12-31T23:59:59.998Z"}
    assert stats["maxValues"] == {"id": 3, "hour": "2024-01-01T05:00:01.000Z"}
    assert stats["nullCount"] == {"id": 0, "hour": 1}
    engine = QueryBuilder().register("t", DeltaTable(wh.location(HOURS)))
    for moment, expected in ((last, 3), (first, 1)):
        found = engine.execute(f"SELECT id FROM t WHERE hour = '{moment.isoformat()}'").read_all()
        assert pa.table(found).column("id").to_pylist() == [expected]


def commit_legacy_file(wh: DeltaWarehouse, rows_of_c: pa.Table, tmp_path: Path) -> str:
    """Commit ``rows_of_c`` to partition c of HOURS as a file of before: no bounds, not judged."""
    pq.write_table(rows_of_c.drop_columns(["batch"]), tmp_path / "legacy.parquet")
    Path(wh.location(HOURS), "batch=c").mkdir()
    shutil.copy(tmp_path / "legacy.parquet", Path(wh.location(HOURS), "batch=c", "legacy.parquet"))
    DeltaTable(wh.location(HOURS)).create_write_transaction(
        [
            AddAction(
                path="batch=c/legacy.parquet",
                size=(tmp_path / "legacy.parquet").stat().st_size,
                partition_values={"batch": "c"},
                modification_time=0,
                data_change=True,
                stats=json.dumps({"numRecords": rows_of_c.num_rows}),
            )
        ],
        mode="append",
        schema=HOURS.schema,
        partition_by=["batch"],
    )
    return "batch=c/legacy.parquet"


def test_a_delta_replace_where_rewrites_a_file_without_bounds_in_its_partition(delta_place, tmp_path):
    wh = delta_place.backend
    wh.replace_partitions(ray.data.from_arrow(at_hours([1, 2], [0, 1], "a")), [HOURS], ["a"])
    path = commit_legacy_file(wh, at_hours([5, 6], [1, 7], "c"), tmp_path)
    wh.replace_where(ray.data.from_arrow(at_hours([9], [1], "a")), HOURS, "hour", [H0 + timedelta(hours=1)])
    assert not any(uri.endswith(path) for uri in DeltaTable(wh.location(HOURS)).file_uris())
    got = sorted((r["batch"], r["id"], r["hour"]) for r in wh.read(HOURS).take_all())
    assert got == [("a", 1, H0), ("a", 9, H0 + timedelta(hours=1)), ("c", 6, H0 + timedelta(hours=7))]


def test_a_delta_read_where_in_opens_no_file_whose_bounds_exclude_the_values(delta_place, tmp_path):
    wh = delta_place.backend
    wh.replace_partitions(ray.data.from_arrow(at_hours([1, 2], [0, 1], "a")), [HOURS], ["a"])
    wh.replace_partitions(ray.data.from_arrow(at_hours([3, 4], [5, 6], "b")), [HOURS], ["b"])
    # A file of a table written before files carried bounds: it may hold any value, so it is read.
    commit_legacy_file(wh, at_hours([5, 6], [1, 7], "c"), tmp_path)
    (b_file,) = Path(wh.location(HOURS), "batch=b").glob("*.parquet")
    b_file.unlink()
    assert ids_read(wh, hours=[1]) == [2, 5]  # the files of a and c, not b's
    with pytest.raises(Exception, match=b_file.name):
        ids_read(wh, hours=[6])


@pytest.mark.parametrize("kind", ["snowflake", "bigquery"])
def test_sql_value_lists_longer_than_a_list_may_be_are_split_and_select_the_same_rows(
    kind, request, tmp_path, monkeypatch
):
    from etl_assets.warehouse import sql

    wh = warehouse_on(kind, request, tmp_path).backend()
    monkeypatch.setattr(sql, "IN_LIST_MOST", 2)
    wh.replace_window(ray.data.from_arrow(rows([1, 2, 3, 4], [D1, D2, D3, D3])), [DAILY], [D1, D2, D3])
    wh.replace_window(ray.data.from_arrow(rows([5], [D2], 5.0)), [DAILY], [D1, D2, D3])
    assert sorted((r["id"], r["value"]) for r in wh.read(DAILY).take_all()) == [(5, 5.0)]
    hourly = [H0 + timedelta(hours=h) for h in range(5)]
    wh.replace_where(ray.data.from_arrow(hourly_rows([1, 2, 3], [0, 2, 4])), HOURLY, "hour", hourly)
    wh.replace_where(ray.data.from_arrow(hourly_rows([4], [3])), HOURLY, "hour", hourly[1:])
    ds = wh.read(HOURLY, where_in=("hour", [*hourly, H0 + timedelta(hours=9)]))
    assert sorted((r["id"], r["hour"]) for r in ds.take_all()) == at((1, 0), (4, 3))


@pytest.mark.parametrize("kind", ["snowflake", "bigquery"])
def test_sql_reads_a_big_partition_in_several_tasks_and_loses_no_row(kind, request, tmp_path, monkeypatch):
    """A day of more than ROWS_PER_READ_TASK rows is split by a hash of its integer key, so no read
    task holds the whole day; every row comes back once."""
    from etl_assets.warehouse import sql

    wh = warehouse_on(kind, request, tmp_path).backend()
    ids = list(range(1, 41))
    wh.replace_window(ray.data.from_arrow(rows(ids + [100], [D1] * 40 + [D2])), [DAILY], [D1, D2])
    monkeypatch.setattr(sql, "ROWS_PER_READ_TASK", 10)
    assert len(wh._shards(DAILY, [D1, D2])) == 40 // 10 + 1 + 1
    blocks = list(wh.read(DAILY, [D1, D2]).iter_batches(batch_format="pyarrow", batch_size=None))
    assert sum(b.num_rows > 0 for b in blocks) > 2
    got = sorted(i for b in blocks for i in b.column("id").to_pylist())
    assert got == ids + [100]
    # By value, only partitions holding a wanted row get a task, each split as its rows ask.
    assert len(wh._shards(DAILY, None, "id <= 25")) == 25 // 10 + 1
    assert len(wh._shards(DAILY, None, "id = 100")) == 1


def test_existing_table_with_another_type_is_refused_naming_the_column(place):
    wh = place.backend
    wh.replace_window(ray.data.from_arrow(rows([1], [D1])), [DAILY], [D1])
    retyped = TableContract(
        name="daily",
        columns=(DAILY.columns[0], Column("value", pa.string(), "now text"), DAILY.columns[2]),
        partition_column="day",
    )
    with pytest.raises(SchemaMismatch, match="column value is double, expected string"):
        wh.replace_window(ray.data.from_arrow(rows([1], [D1])), [retyped], [D1])
    assert wh.table_schema(DAILY).names == DAILY.column_names


def test_merge_keeps_newer_versions_and_deletes_unmatched_rows_only_in_scope(place):
    contract = TableContract(name="dim", columns=DAILY.columns, keys=("id",))
    wh = place.backend
    wh.merge(ray.data.from_arrow(rows([1, 2, 3], [D1, D2, D3], 1.0)), contract)
    # An older version (smaller value) must not replace a newer one when updating on "value".
    older = pa.concat_tables([rows([1], [D1], 0.5), rows([2], [D2], 9.0)])
    wh.merge(ray.data.from_arrow(older), contract, update_if="value")
    assert [(r["id"], r["value"]) for r in place.content(contract)] == [(1, 1.0), (2, 9.0), (3, 1.0)]
    # The source is the whole truth for days D1 and D2: id 1 (D1) disappears, id 3 (D3) stays.
    wh.merge(ray.data.from_arrow(rows([2], [D2], 9.0)), contract, delete_unmatched_in=("day", [D1, D2]))
    assert [r["id"] for r in place.content(contract)] == [2, 3]


@pytest.mark.parametrize("kind", ["snowflake", "bigquery"])
def test_the_environment_selects_and_configures_the_warehouse(kind, request, monkeypatch, tmp_path):
    """ETL_WAREHOUSE and the backend's variables, as a user sets them, reach a working backend."""
    from etl_assets.resources import warehouse_from_env

    name = f"env{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("ETL_WAREHOUSE", kind)
    if kind == "snowflake":
        for var, value in {
            "SNOWFLAKE_ACCOUNT": "fakesnow",
            "SNOWFLAKE_USER": "fake",
            "SNOWFLAKE_PASSWORD": "snow",
            "SNOWFLAKE_DATABASE": name.upper(),
            "SNOWFLAKE_HOST": "127.0.0.1",
            "SNOWFLAKE_PORT": str(request.getfixturevalue("fakesnow")),
            "SNOWFLAKE_PROTOCOL": "http",
        }.items():
            monkeypatch.setenv(var, value)
    else:
        monkeypatch.setenv("BIGQUERY_PROJECT", BIGQUERY_PROJECT)
        monkeypatch.setenv("BIGQUERY_DATASET", name)
        monkeypatch.setenv("BIGQUERY_API_ENDPOINT", request.getfixturevalue("bigquery_emulator"))
    resource = warehouse_from_env()
    # Secrets stay EnvVars until Dagster resolves them for a run.
    if kind == "snowflake":
        assert isinstance(resource.snowflake.password, dg.EnvVar)

    @dg.asset
    def daily(warehouse: WarehouseResource) -> dg.MaterializeResult:
        written = warehouse.backend().replace_window(
            ray.data.from_arrow(rows([1, 2], [D1, D1])), [DAILY], [D1]
        )
        return dg.MaterializeResult(metadata={"rows": written.tables["daily"].table_row_count})

    result = dg.materialize([daily], resources={"warehouse": resource})
    assert result.asset_materializations_for_node("daily")[0].metadata["rows"].value == 2
    # Read back through a warehouse configured by hand on the same database or dataset.
    assert [r["id"] for r in Place(warehouse_on(kind, request, tmp_path, name)).content()] == [1, 2]


EVERY_TYPE = TableContract(
    name="typed",
    columns=(
        Column("id", pa.int64(), "key", nullable=False),
        Column("small", pa.int8(), "int8"),
        Column("count", pa.int32(), "int32"),
        Column("ratio", pa.float64(), "double"),
        Column("amount", pa.decimal128(12, 2), "decimal"),
        Column("label", pa.string(), "text"),
        Column("flag", pa.bool_(), "boolean"),
        Column("happened_at", pa.timestamp("us", "UTC"), "timestamp in UTC"),
        Column("codes", pa.list_(pa.string()), "list of text"),
        Column("day", pa.date32(), "partition", nullable=False),
    ),
    keys=("id",),
    partition_column="day",
)


def test_every_column_type_round_trips_exactly(place):
    from datetime import UTC, datetime
    from decimal import Decimal

    table = pa.table(
        {
            "id": [1, 2, 3],
            "small": [-5, None, 127],
            "count": [2_000_000_000, None, 0],
            "ratio": [0.1, None, -2.5e300],
            "amount": [Decimal("1234567890.12"), None, Decimal("-0.01")],
            "label": ['ünïcode, "quoted"', None, ""],
            "flag": [True, None, False],
            "happened_at": [
                datetime(2024, 1, 1, 23, 59, 59, 999999, tzinfo=UTC),
                None,
                datetime(1999, 12, 31, tzinfo=UTC),
            ],
            # No null list: BigQuery cannot store one (a REPEATED field is empty instead), and
            # the one list column of the platform (failed_rules) is never null.
            "codes": [["a.not_null", "b.unique"], [], ["x"]],
            "day": [D1, D1, D2],
        },
        schema=EVERY_TYPE.schema,
    )
    place.backend.replace_window(ray.data.from_arrow(table), [EVERY_TYPE], [D1, D2])
    wanted = sorted(table.to_pylist(), key=lambda r: r["id"])
    read = pa.concat_tables(place.backend.read(EVERY_TYPE).iter_batches(batch_format="pyarrow"))
    assert read.schema == EVERY_TYPE.schema
    assert sorted(read.to_pylist(), key=lambda r: r["id"]) == wanted
    scanned = pa.Table.from_batches(list(place.backend.scan(EVERY_TYPE)), schema=EVERY_TYPE.schema)
    assert sorted(scanned.to_pylist(), key=lambda r: r["id"]) == wanted
    # Read with the warehouse's own client, not the platform's reader.
    independent = read_arrow(place.resource, "typed").select(EVERY_TYPE.column_names)
    assert sorted(independent.cast(EVERY_TYPE.schema).to_pylist(), key=lambda r: r["id"]) == wanted
    assert place.backend.table_schema(EVERY_TYPE).names == EVERY_TYPE.column_names


@pytest.mark.parametrize("kind", ["snowflake", "bigquery"])
def test_a_failing_transaction_changes_neither_table(kind, request, tmp_path, monkeypatch):
    """Two tables written in one write (orders and their rejects) commit together or not at all."""
    place = Place(warehouse_on(kind, request, tmp_path))
    other = TableContract(name="daily_other", columns=DAILY.columns, keys=("id",), partition_column="day")
    both = lambda block: {"daily": block, "daily_other": block}  # noqa: E731
    place.backend.replace_window(ray.data.from_arrow(rows([1, 2], [D1, D1])), [DAILY, other], [D1], both)
    insert = place.backend._insert_from

    def broken_for_the_second_table(target, staged):
        sql = insert(target, staged)
        return sql.replace("SELECT", "SELECT no_such_column,", 1) if target.name == "daily_other" else sql

    monkeypatch.setattr(place.backend, "_insert_from", broken_for_the_second_table)
    with pytest.raises(Exception, match="(?i)no_such_column"):
        place.backend.replace_window(ray.data.from_arrow(rows([7], [D1])), [DAILY, other], [D1], both)
    # The first table's DELETE and INSERT ran before the failure; the rollback undid them.
    assert [r["id"] for r in place.content()] == [1, 2]
    assert [r["id"] for r in place.content(other)] == [1, 2]
    assert place.staging_left() == []


BATCHES = TableContract(
    name="batches",
    columns=(Column("id", pa.int64(), "key"), Column("batch", pa.string(), "batch id")),
    partition_column="batch",
)


def test_rows_of_the_asked_text_partitions_are_counted_and_no_others(place):
    ids, batches = [1, 2, 3, 4, 5], ["b1", "b2", "b2", "b3", "b3"]
    table = pa.table({"id": ids, "batch": batches})
    place.backend.replace_partitions(ray.data.from_arrow(table), [BATCHES], sorted(set(batches)))
    assert place.backend.partition_row_counts(BATCHES) == {"b1": 1, "b2": 2, "b3": 2}
    # An asked batch without rows is left out.
    assert place.backend.partition_row_counts(BATCHES, ["b3", "b1", "b9"]) == {"b1": 1, "b3": 2}
    if place.resource.kind.startswith("delta"):
        assert place.backend.partition_row_counts(BATCHES, ["b1' OR 1=1"]) == {}
    else:  # a value is never spliced into SQL as it is
        with pytest.raises(ValueError, match="holds a quote or a backslash"):
            place.backend.partition_row_counts(BATCHES, ["b1' OR 1=1"])


@pytest.mark.parametrize("kind", ["snowflake", "bigquery"])
def test_a_quote_in_a_partition_value_is_refused_before_anything_is_written(kind, request, tmp_path):
    place = Place(warehouse_on(kind, request, tmp_path))
    batches = BATCHES
    bad = "x' OR 1=1"
    with pytest.raises(ValueError, match="holds a quote or a backslash"):
        place.backend.replace_partitions(
            ray.data.from_arrow(pa.table({"id": [1], "batch": [bad]})), [batches], [bad]
        )
    assert not place.backend.exists(batches)


class LoadsThenDiesOnce:
    """A worker that loads its block, then dies before reporting it (once per block)."""

    def __init__(self, loader, marker_dir: str):
        self.loader = loader
        self.marker_dir = marker_dir

    def __call__(self, table_name: str, rows: pa.Table) -> None:
        self.loader(table_name, rows)
        marker = Path(self.marker_dir) / str(rows.column("id")[0].as_py())
        if not marker.exists():
            marker.touch()
            raise RuntimeError("worker lost after its load")


@pytest.mark.parametrize("kind", ["snowflake", "bigquery"])
def test_a_task_retried_after_its_load_landed_adds_nothing(kind, request, tmp_path, monkeypatch):
    place = Place(warehouse_on(kind, request, tmp_path))
    context = ray.data.DataContext.get_current()
    monkeypatch.setattr(context, "retried_map_errors", ["worker lost after its load"])
    monkeypatch.setattr(context, "max_map_retries", 1)
    loader = place.backend.stage_loader()
    monkeypatch.setattr(place.backend, "stage_loader", lambda: LoadsThenDiesOnce(loader, str(tmp_path)))
    blocks = [rows([1, 2], [D1, D1]), rows([3], [D2])]
    result = place.backend.replace_window(ray.data.from_arrow(blocks), [DAILY], [D1, D2])
    # Every block was loaded twice; the table holds each row once.
    assert len(list(tmp_path.iterdir())) >= 2
    assert [r["id"] for r in place.content()] == [1, 2, 3]
    assert result.tables["daily"].rows_written == 3


def test_checks_read_a_window_block_by_block_and_meet_each_key_in_one_task(place, monkeypatch, checks_path):
    """What the checks read from every backend: each block of the asked partitions in a Ray task,
    and every row of a key (within its partition, or over the whole table) in one task of an
    exchange, however many buckets it has; or, for a small window, all of it in the driver."""
    from etl_assets.checks import window_reads
    from etl_assets.transforms.check_partials import partition_sums

    ids, days = [7, 1, 5, 7, 2, 7, 5, 9], [D2, D1, D2, D2, D2, D1, D1, D3]
    place.backend.replace_window(ray.data.from_arrow(rows(ids, days)), [DAILY], [D1, D2, D3])
    sums = partial(partition_sums, column="day", summed=["id"])
    per_day: dict[str, tuple[int, int]] = {}
    for part in window_reads.block_partials(None, place.backend, DAILY, [D2, D1], ["id", "day"], sums):
        for row in part.to_pylist():
            count, total = per_day.get(row["value"], (0, 0))
            per_day[row["value"]] = (count + row["rows"], total + row["id_sum"])
    wanted = {d: [i for i, day in zip(ids, days, strict=True) if day == d] for d in (D1, D2)}
    assert per_day == {d.isoformat(): (len(w), sum(w)) for d, w in wanted.items()}

    def repeats(partitions):
        """Per partition value: keys repeated, and the sampled keys with their counts."""
        found: dict = {}
        for part in window_reads.key_tallies(None, place.backend, DAILY, partitions):
            for row in part.to_pylist():
                repeated, samples = found.get(row["value"], (0, []))
                found[row["value"]] = (repeated + row["repeated"], sorted([*samples, *row["samples"]]))
        return found

    # In Ray, a bucket per row: a key's rows still meet. Within a day only 7 repeats (twice on D2;
    # D3 is not asked for); over the whole table 5 and 7 do.
    monkeypatch.setattr(window_reads, "buckets_for", lambda count: max(count, 1))
    assert repeats([D1, D2]) == {D2.isoformat(): (1, ['{"id": 7, "count_all": 2}'])}
    assert repeats(None) == {None: (2, ['{"id": 5, "count_all": 2}', '{"id": 7, "count_all": 3}'])}


BATCHED = TableContract(
    name="batched",
    columns=(
        Column("id", pa.int64(), "key", nullable=False),
        Column("batch_id", pa.string(), "partition", nullable=False),
    ),
    keys=("id",),
    partition_column="batch_id",
)


def test_delta_reads_partitions_whose_folders_need_escapes_and_name_a_table_they_cannot_read(
    delta_place,
):
    """A batch id with a space, a colon and a percent sign: its folder is escaped on disk and
    escaped again in the Delta log; scans and Ray reads both find its file. A table with no file
    scans as no rows, and a file that breaks the contract fails naming the table."""
    wh = delta_place.backend
    odd = "2024-01-01 10:00%x"
    table = pa.table({"id": pa.array([1, 2], pa.int64()), "batch_id": [odd, "plain"]}, schema=BATCHED.schema)
    wh.replace_partitions(ray.data.from_arrow(table), [BATCHED], [odd, "plain"])
    assert pa.Table.from_batches(list(wh.scan(BATCHED, [odd]))).to_pylist() == [{"id": 1, "batch_id": odd}]
    read = wh.read(BATCHED, [odd]).take_all()
    assert read == [{"id": 1, "batch_id": odd}]
    # A rewrite removes the escaped partition's file by its path as the log spells it: were that
    # path escaped once more, the old file would stay beside its rewrite and id 3 with it.
    more = pa.table({"id": pa.array([3, 4], pa.int64()), "batch_id": [odd, odd]}, schema=BATCHED.schema)
    wh.replace_partitions(ray.data.from_arrow(pa.concat_tables([table, more])), [BATCHED], [odd, "plain"])
    kept = pa.table({"id": pa.array([1], pa.int64()), "batch_id": [odd]}, schema=BATCHED.schema)
    wh.replace_where(ray.data.from_arrow(kept), BATCHED, "id", [1, 3])
    rows = sorted((r["id"], r["batch_id"]) for r in wh.read(BATCHED).take_all())
    assert rows == [(1, odd), (2, "plain"), (4, odd)]
    assert len(DeltaTable(wh.location(BATCHED)).file_uris()) == 3  # the rewrite, the new row, plain
    wh.replace_partitions(ray.data.from_arrow(table.slice(0, 0)), [BATCHED], [odd, "plain"])
    assert list(wh.scan(BATCHED)) == []
    # A file that holds text where the contract says a number.
    write_deltalake(
        wh.location(BATCHED),
        pa.table({"id": ["one"], "batch_id": ["b"]}),
        mode="overwrite",
        partition_by=["batch_id"],
        schema_mode="overwrite",
    )
    with pytest.raises(SchemaMismatch, match=r"table batched at .*batched cannot be read"):
        list(wh.scan(BATCHED))
