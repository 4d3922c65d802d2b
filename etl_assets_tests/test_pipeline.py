"""The daily pipeline through dagster.materialize, compared with DuckDB over the same source files."""

import shutil
from collections import Counter

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from deltalake import DeltaTable

from etl_assets.checks.rules import check_key_named, check_named
from etl_assets.contracts import ALL_TABLES as CONTRACTS
from etl_assets.contracts import (
    CUSTOMER_ORDERS,
    CUSTOMERS,
    DAILY_CUSTOMER_METRICS,
    ORDERS,
    ORDERS_REJECTS,
    RAW_CUSTOMERS,
)
from etl_assets.resources import WarehouseResource
from etl_assets_tests import expected
from etl_assets_tests.conftest import (
    PROVENANCE,
    SAMPLE_DAYS,
    day,
    read_table,
    run_window,
)

FLOATS = {"order_amount", "total_spend", "avg_order_value"}


def assert_same_table(actual: pd.DataFrame, wanted: pd.DataFrame, keys: list[str], columns: list[str]):
    actual = expected.normalise(actual, keys, columns)
    wanted = expected.normalise(wanted, keys, columns)
    assert len(actual) == len(wanted)
    for column in columns:
        if column in FLOATS:
            pd.testing.assert_series_equal(
                actual[column].astype(float),
                wanted[column].astype(float),
                rtol=1e-9,
                atol=0.006,
                check_names=False,
            )
        else:
            assert (
                actual[column].astype(object).where(actual[column].notna(), None).tolist()
                == wanted[column].astype(object).where(wanted[column].notna(), None).tolist()
            ), column


@pytest.fixture(scope="module")
def duck(sample_dir):
    return expected.connect(sample_dir)


@pytest.mark.parametrize(
    "contract, keys",
    [
        (RAW_CUSTOMERS, ["customer_id", "updated_at"]),
        (CUSTOMERS, ["customer_id", "valid_from"]),
        (ORDERS, ["order_id"]),
        (CUSTOMER_ORDERS, ["order_id"]),
        (DAILY_CUSTOMER_METRICS, ["metric_date", "customer_id", "customer_segment"]),
    ],
    ids=lambda v: getattr(v, "name", ""),
)
def test_table_equals_independent_duckdb_computation(full_warehouse, duck, contract, keys):
    actual = read_table(full_warehouse, contract.name)
    wanted = expected.table(duck, contract.name)
    assert len(wanted) > 0
    assert_same_table(actual, wanted, keys, contract.column_names)


def test_rejects_and_duplicates_account_for_every_lake_row(full_warehouse, duck):
    rejects = read_table(full_warehouse, ORDERS_REJECTS.name)
    wanted = expected.table(duck, "orders_rejects")
    assert len(rejects) == len(wanted) > 0
    lake_rows = duck.execute("SELECT count(*) FROM lake").fetchone()[0]
    distinct_rows = duck.execute("SELECT count(*) FROM delivered").fetchone()[0]
    loaded = len(read_table(full_warehouse, ORDERS.name))
    assert lake_rows == loaded + len(rejects) + (lake_rows - distinct_rows)
    # The sample's bad rows, each rejected with the code of the contract rule it breaks.
    assert set(rejects["reject_reason"]) == {
        "order_id.not_null",
        "customer_id.not_null",
        "order_amount.greater_than",
        "order_ts.on_order_date",
    }
    assert all(reason == rules[0] for reason, rules in zip(rejects["reject_reason"], rejects["failed_rules"]))
    assert rejects["run_id"].notna().all()


def test_orphan_orders_are_kept_and_flagged(full_warehouse, duck):
    joined = read_table(full_warehouse, CUSTOMER_ORDERS.name)
    orphans = joined[joined["is_orphan"]]
    wanted = duck.execute("SELECT count(*) FROM customer_orders WHERE is_orphan").fetchone()[0]
    assert len(orphans) == wanted > 0
    assert orphans["customer_segment"].isna().all()


def snapshot(warehouse, names):
    out = {}
    for name in names:
        contract = {c.name: c for c in CONTRACTS}[name]
        # The rejects name the run that rejected them; everything else must be equal.
        columns = [c for c in contract.column_names if c not in PROVENANCE]
        frame = read_table(warehouse, name)
        out[name] = frame[columns].sort_values(columns).reset_index(drop=True)
    return out


ALL_TABLES = expected.DAILY_TABLES


def test_rerunning_a_partition_leaves_every_table_unchanged(sample_dir, full_warehouse, tmp_path):
    warehouse = tmp_path / "warehouse"
    shutil.copytree(full_warehouse, warehouse)
    before = snapshot(warehouse, ALL_TABLES)
    versions = {n: DeltaTable(str(warehouse / n)).version() for n in ALL_TABLES}
    result = run_window(sample_dir, warehouse, day(3), day(3), with_checks=False)
    assert result.success
    after = snapshot(warehouse, ALL_TABLES)
    for name in ALL_TABLES:
        assert DeltaTable(str(warehouse / name)).version() > versions[name], name
        pd.testing.assert_frame_equal(before[name], after[name], check_exact=True, obj=name)


def test_one_seven_day_run_equals_single_day_runs(sample_dir, full_warehouse, tmp_path):
    """Days 0..3 loaded one run each hold, for those days, exactly what the 7-day run holds.

    ``customers`` is left out: with later days not loaded yet, its latest versions are still
    current (the reverse-order test checks the SCD2 table built day by day)."""
    warehouse = tmp_path / "warehouse"
    loaded = range(4)
    for offset in loaded:
        assert run_window(sample_dir, warehouse, day(offset), day(offset), with_checks=False).success
    dated = [n for n in ALL_TABLES if n != "customers"]
    one_run = snapshot(full_warehouse, dated)
    day_by_day = snapshot(warehouse, dated)
    days = {day(offset) for offset in loaded}
    for name in dated:
        column = {c.name: c for c in CONTRACTS}[name].partition_column
        wanted = one_run[name][pd.to_datetime(one_run[name][column]).dt.date.isin(days)]
        assert len(wanted) > 0
        pd.testing.assert_frame_equal(
            wanted.reset_index(drop=True), day_by_day[name], check_exact=True, obj=name
        )


def test_customer_days_in_reverse_order_give_the_same_scd2_table(sample_dir, full_warehouse, tmp_path):
    from etl_assets import definitions

    warehouse = tmp_path / "warehouse"
    for offset in reversed(range(SAMPLE_DAYS)):
        result = run_window(
            sample_dir,
            warehouse,
            day(offset),
            day(offset),
            assets=[definitions.raw_customers, definitions.customers],
            with_checks=False,
        )
        assert result.success
    # And a day loaded twice more changes nothing.
    assert run_window(
        sample_dir,
        warehouse,
        day(2),
        day(4),
        assets=[definitions.raw_customers, definitions.customers],
        with_checks=False,
    ).success
    wanted = snapshot(full_warehouse, ["customers"])["customers"]
    pd.testing.assert_frame_equal(wanted, snapshot(warehouse, ["customers"])["customers"], check_exact=True)
    # A day the CRM changed nothing leaves the table as it is, without a commit.
    version = DeltaTable(str(warehouse / "customers")).version()
    quiet = day(SAMPLE_DAYS + 3)
    customer_days = [definitions.raw_customers, definitions.customers]
    result = run_window(sample_dir, warehouse, quiet, quiet, assets=customer_days, with_checks=False)
    assert result.success
    assert DeltaTable(str(warehouse / "customers")).version() == version
    (written,) = result.asset_materializations_for_node("customers")
    assert written.metadata["merged_rows"].value == 0
    assert written.metadata["dagster/row_count"].value == len(wanted)


def test_missing_lake_partition_fails_naming_the_path(sample_dir, tmp_path):
    from etl_assets import definitions

    later = day(SAMPLE_DAYS + 2)
    result = run_window(
        sample_dir,
        tmp_path / "warehouse",
        later,
        later,
        assets=[definitions.orders_and_rejects],
        with_checks=False,
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.event_specific_data.error.to_string()
    folder = sample_dir / "sources" / "lake" / "orders" / f"date={later.isoformat()}"
    assert f"orders lake partition {folder} is missing" in message
    # Not retried: a missing folder will not appear by waiting five seconds.
    assert sum(e.event_type_value == "STEP_UP_FOR_RETRY" for e in result.all_events) == 0


def test_checks_pass_on_the_sample_and_report_one_result_per_day(
    sample_dir, full_warehouse, tmp_path, checks_path
):
    warehouse = tmp_path / "warehouse"
    shutil.copytree(full_warehouse, warehouse)
    result = run_window(sample_dir, warehouse, day(0), day(1))
    evaluations = result.get_asset_check_evaluations()
    by_check: dict[str, dict] = {}
    for e in evaluations:
        by_check.setdefault(e.check_name, {})[e.partition] = e
    assert {
        "daily_customer_metrics_reconcile",
        "orders_reject_rate",
        "orders_contract_rules",
        "orders_schema_matches_contract",
        "customer_orders_orphans",
        "orders_key_unique",
        "customers_one_current_version",
    } <= set(by_check)
    # A two-day run reports each partitioned check once per day.
    for name in ("orders_reject_rate", "orders_contract_rules", "daily_customer_metrics_reconcile"):
        assert set(by_check[name]) == {day(0).isoformat(), day(1).isoformat()}, name
    assert set(by_check["customers_one_current_version"]) == {None}
    failed = [(e.check_name, e.partition) for e in evaluations if not e.passed]
    # The generator writes untidy emails and phones on purpose: soft rules, reported as warnings.
    assert all(e.severity.value == "WARN" for e in evaluations if not e.passed), failed
    joined = read_table(warehouse, CUSTOMER_ORDERS.name)
    for d in (day(0), day(1)):
        orphans = by_check["customer_orders_orphans"][d.isoformat()].metadata["orphan_orders"].value
        of_day = joined[pd.to_datetime(joined["order_date"]).dt.date == d]
        assert orphans == int(of_day["is_orphan"].sum())
        reconciled = by_check["daily_customer_metrics_reconcile"][d.isoformat()].metadata
        assert reconciled["orders"].value == reconciled["order_count"].value == len(of_day)
        assert reconciled["order_amount"].value == pytest.approx(of_day["order_amount"].sum(), abs=0.01)
        rate = by_check["orders_reject_rate"][d.isoformat()].metadata
        assert rate["rows_loaded"].value == int(
            (pd.to_datetime(read_table(warehouse, "orders")["order_date"]).dt.date == d).sum()
        )


def test_materialization_metadata(sample_dir, tmp_path):
    from etl_assets import definitions

    result = run_window(
        sample_dir, tmp_path / "w", day(0), day(1), assets=[definitions.orders_and_rejects], with_checks=False
    )
    materializations = result.asset_materializations_for_node("orders_and_rejects")
    by_partition = {(m.asset_key.to_user_string(), m.partition): m.metadata for m in materializations}
    assert set(by_partition) == {
        (t, d.isoformat()) for t in ("orders", "orders_rejects") for d in (day(0), day(1))
    }
    table = read_table(tmp_path / "w", "orders")
    rejects = read_table(tmp_path / "w", "orders_rejects")
    rejecting = {r.code for r in ORDERS.rules if r.rejects}
    for d in (day(0), day(1)):
        orders = by_partition[("orders", d.isoformat())]
        # Each partition reports its own rows, not the run's (both days are in this run).
        loaded = int((pd.to_datetime(table["order_date"]).dt.date == d).sum())
        of_day = rejects[pd.to_datetime(rejects["order_date"]).dt.date == d]
        assert orders["dagster/partition_row_count"].value == orders["rows_loaded"].value == loaded
        assert orders["rows_rejected"].value == len(of_day)
        assert by_partition[("orders_rejects", d.isoformat())]["dagster/partition_row_count"].value == len(
            of_day
        )
        assert orders["dagster/row_count"].value == len(table)
        lake_rows = sum(
            pq.ParquetFile(f).metadata.num_rows
            for f in (sample_dir / "sources" / "lake" / "orders" / f"date={d.isoformat()}").glob("*.parquet")
        )
        assert orders["rows_in"].value == lake_rows > 0
        assert orders["rows_in"].value == (
            orders["rows_loaded"].value + orders["rows_rejected"].value + orders["duplicates_collapsed"].value
        )
        # Counts per rule of rejecting rules equal the codes on the day's stored rejects.
        stored_of_day = Counter(c for rules in of_day["failed_rules"] for c in rules)
        assert {c: n for c, n in orders["rule_failures"].value.items() if c in rejecting} == stored_of_day
        assert [c.name for c in orders["dagster/column_schema"].schema.columns] == ORDERS.column_names
    assert orders["source_columns_ignored"].value == {}
    assert "order_date" in orders["dagster/column_lineage"].column_lineage.deps_by_column
    assert orders["dagster/uri"].value.endswith("/orders")
    assert orders["ray/wall_seconds"].value > 0


def test_nothing_lost_check_fails_when_lake_rows_are_unaccounted_for(sample_dir, tmp_path):
    import dagster as dg

    from etl_assets import definitions
    from etl_assets.checks.rules import orders_nothing_lost
    from etl_assets_tests.conftest import resources

    sample = tmp_path / "sample"
    shutil.copytree(sample_dir / "sources" / "lake", sample / "sources" / "lake")
    instance = dg.DagsterInstance.ephemeral()
    assets = [definitions.orders_and_rejects, orders_nothing_lost]
    res = resources(sample, tmp_path / "w")
    ok = dg.materialize(assets, partition_key=day(0).isoformat(), resources=res, instance=instance)
    assert ok.get_asset_check_evaluations()[0].passed
    # A file lands in the day's folder after the load: its rows are in the lake but not loaded.
    folder = sample / "sources" / "lake" / "orders" / f"date={day(0).isoformat()}"
    shutil.copy(folder / "part-00000.parquet", folder / "late-arrival.parquet")
    # Run the check alone (its op only), as the UI's "Execute check" does.
    defs = dg.Definitions(
        assets=[definitions.orders_and_rejects], asset_checks=[orders_nothing_lost], resources=res
    )
    check_only = defs.resolve_implicit_global_asset_job_def().execute_in_process(
        partition_key=day(0).isoformat(), instance=instance, op_selection=["orders_orders_nothing_lost"]
    )
    evaluation = check_only.get_asset_check_evaluations()[0]
    assert not evaluation.passed
    assert evaluation.partition == day(0).isoformat()
    counts = {k: v.value for k, v in evaluation.metadata.items()}
    assert counts["rows_in"] > counts["loaded"] + counts["rejected"] + counts["duplicates"]


@pytest.mark.parametrize("problem", ["unreadable", "retyped", "missing_column", "extra_column"])
def test_lake_problems_fail_naming_file_and_column_or_are_ignored(sample_dir, tmp_path, problem):
    import dagster as dg
    import pyarrow as pa

    from etl_assets import definitions

    sample = tmp_path / "sample"
    shutil.copytree(sample_dir / "sources" / "lake", sample / "sources" / "lake")
    path = sample / "sources" / "lake" / "orders" / f"date={day(1).isoformat()}" / "part-00001.parquet"
    table = pq.read_table(path)
    if problem == "unreadable":
        path.write_bytes(b"not parquet at all")
    elif problem == "retyped":
        pq.write_table(
            table.set_column(3, "order_amount", table.column("order_amount").cast(pa.string())), path
        )
    elif problem == "missing_column":
        pq.write_table(table.drop_columns(["channel"]), path)
    else:
        pq.write_table(table.append_column("coupon", pa.array(["x"] * table.num_rows)), path)
    result = run_window(
        sample,
        tmp_path / "w",
        day(0),
        day(1),
        assets=[definitions.orders_and_rejects],
        with_checks=False,
        raise_on_error=False,
    )
    if problem == "extra_column":
        assert result.success  # an unknown column is ignored, with a warning
        assert "coupon" not in read_table(tmp_path / "w", "orders").columns
        ignored = {
            m.partition: m.metadata["source_columns_ignored"].value
            for m in result.asset_materializations_for_node("orders_and_rejects")
            if m.asset_key == dg.AssetKey("orders")
        }
        # Reported on the day whose file has the column, and only there.
        assert ignored == {day(0).isoformat(): {}, day(1).isoformat(): {"coupon": "string"}}
        return
    assert not result.success
    message = next(
        e for e in result.all_events if e.event_type_value == "STEP_FAILURE"
    ).event_specific_data.error.to_string()
    expected = {
        "unreadable": f"orders lake file {path} is unreadable",
        "retyped": f"orders lake file {path}: column order_amount is string, expected double",
        "missing_column": f"orders lake file {path}: column channel (string) is missing",
    }[problem]
    assert expected in message
    assert not (tmp_path / "w" / "orders").exists()  # nothing was written


def test_row_count_anomaly_warns_on_a_day_far_from_the_trailing_mean(sample_dir, tmp_path):
    import dagster as dg

    from etl_assets import definitions
    from etl_assets_tests.conftest import resources

    anomaly = check_named("orders_row_count_anomaly")
    sample = tmp_path / "sample"
    shutil.copytree(sample_dir / "sources" / "lake", sample / "sources" / "lake")
    # Day 3 delivers only one of its two files: about half its usual rows.
    (sample / "sources" / "lake" / "orders" / f"date={day(3).isoformat()}" / "part-00001.parquet").unlink()
    result = dg.materialize(
        [definitions.orders_and_rejects, anomaly],
        # The anomaly check alone of its table's step, as a schedule selecting it would run it.
        selection=dg.AssetSelection.assets(*definitions.orders_and_rejects.keys).without_checks()
        | dg.AssetSelection.checks(check_key_named("orders_row_count_anomaly")),
        resources=resources(sample, tmp_path / "w"),
        tags={
            "dagster/asset_partition_range_start": day(0).isoformat(),
            "dagster/asset_partition_range_end": day(3).isoformat(),
        },
        # The step of orders' contract checks takes each check's settings.
        run_config={"ops": {"orders_contract_checks": {"config": {"max_deviation": 0.3}}}},
    )
    assert result.success  # a warning does not fail the run
    assert {e.check_name for e in result.get_asset_check_evaluations()} == {"orders_row_count_anomaly"}
    evaluations = {e.partition: e for e in result.get_asset_check_evaluations()}
    assert set(evaluations) == {day(i).isoformat() for i in range(4)}
    assert [p for p, e in evaluations.items() if not e.passed] == [day(3).isoformat()]
    assert evaluations[day(3).isoformat()].severity == dg.AssetCheckSeverity.WARN
    assert evaluations[day(3).isoformat()].metadata["trailing_days_with_rows"].value == 3
    # The first day has nothing to compare with and passes.
    assert evaluations[day(0).isoformat()].passed


def test_conflicting_copies_of_an_order_id_are_both_rejected_as_duckdb_says(sample_dir, tmp_path):
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from etl_assets import definitions

    sample = tmp_path / "sample"
    shutil.copytree(sample_dir / "sources", sample / "sources")
    folder = sample / "sources" / "lake" / "orders" / f"date={day(1).isoformat()}"
    delivered = pq.read_table(folder / "part-00000.parquet")
    valid = delivered.filter(
        pc.and_(pc.is_valid(delivered.column("order_id")), pc.greater(delivered.column("order_amount"), 0))
    )
    # Two valid orders delivered again with another amount: the same ids, conflicting content.
    conflicting = valid.slice(0, 2)
    conflicting = conflicting.set_column(3, "order_amount", pc.add(conflicting.column("order_amount"), 1.0))
    pq.write_table(conflicting, folder / "late-correction.parquet")
    assert run_window(sample, tmp_path / "w", day(1), day(1), assets=[definitions.orders_and_rejects]).success
    duck = expected.connect(sample)
    of_day = f"DATE '{day(1).isoformat()}'"
    wanted_orders = expected.table(duck, "orders", f"order_date = {of_day}")
    wanted_rejects = expected.table(duck, "orders_rejects", f"folder_day = {of_day}").rename(
        columns={"folder_day": "order_date"}
    )
    columns = ORDERS.column_names
    assert_same_table(read_table(tmp_path / "w", "orders"), wanted_orders, ["order_id"], columns)
    assert_same_table(read_table(tmp_path / "w", "orders_rejects"), wanted_rejects, columns, columns)
    rejects = read_table(tmp_path / "w", "orders_rejects")
    unique = rejects[rejects["reject_reason"] == "order_id.unique"]
    assert sorted(unique["order_id"]) == sorted(conflicting.column("order_id").to_pylist() * 2)


def test_days_split_into_buckets_give_the_same_tables_as_whole_days(
    sample_dir, full_warehouse, tmp_path, monkeypatch
):
    """The paths taken by big days (a day judged in buckets by order id, metrics and customers
    exchanged in many buckets, reads in several tasks) give every table exactly as the whole-day
    path does on the sample's small days (which equal DuckDB, above); the checks still pass. The
    window's split days share one exchange, holding every day's buckets."""
    from etl_assets import ray_steps
    from etl_assets.sources import orders_lake
    from etl_assets.warehouse import delta

    # Sizes are decided on the driver, so lowering them here splits every day of ~600 rows.
    monkeypatch.setattr(orders_lake, "BUCKET_ROWS", 150)
    monkeypatch.setattr(ray_steps, "BUCKET_ROWS", 100)
    monkeypatch.setattr(delta, "READ_ROWS", 200)
    exchanged = []  # the bucket count of each exchange the lake read builds
    real_exchange = orders_lake.exchange
    monkeypatch.setattr(
        orders_lake, "exchange", lambda *args: exchanged.append(args[1]) or real_exchange(*args)
    )
    days = [day(i) for i in range(SAMPLE_DAYS)]
    lake = orders_lake.inspect_days(str(sample_dir / "sources" / "lake" / "orders"), days)
    rows_per_day = {x.day: x.rows for x in lake}
    assert len(rows_per_day) == SAMPLE_DAYS and min(rows_per_day.values()) > 150
    warehouse = tmp_path / "warehouse"
    result = run_window(sample_dir, warehouse, day(0), day(SAMPLE_DAYS - 1))
    assert result.success
    assert exchanged == [sum(-(-rows // 150) for rows in rows_per_day.values())]
    failed = [e.check_name for e in result.get_asset_check_evaluations() if not e.passed]
    assert all(e.severity.value == "WARN" for e in result.get_asset_check_evaluations() if not e.passed), (
        failed
    )
    # The whole-day path writes a file per day; this one a file per bucket.
    files = DeltaTable(str(warehouse / "orders")).file_uris()
    assert len(files) > 2 * SAMPLE_DAYS
    split, whole = snapshot(warehouse, ALL_TABLES), snapshot(full_warehouse, ALL_TABLES)
    for name in ALL_TABLES:
        assert len(whole[name]) > 0
        pd.testing.assert_frame_equal(whole[name], split[name], check_exact=True, obj=name)


def test_split_days_sharing_an_exchange_keep_their_buckets_apart(sample_dir):
    """Rows of each day of a shared exchange get that day's own range of bucket numbers, starting
    after the buckets of the days before it: no bucket mixes two days."""
    from etl_assets.ray_steps import BUCKET
    from etl_assets.sources import orders_lake

    days = [day(i) for i in range(3)]
    lake = orders_lake.inspect_days(str(sample_dir / "sources" / "lake" / "orders"), days)
    counts, pieces, first = [3, 2, 4], [], 0
    for lake_day, buckets in zip(lake, counts, strict=True):
        pieces += orders_lake._pieces(lake_day, buckets, first)
        first += buckets
    tagged = orders_lake._split_pieces(pa.Table.from_pylist(pieces, schema=orders_lake.PIECES))
    assert tagged.num_rows == sum(x.rows for x in lake)
    frame = tagged.select(["order_date", BUCKET]).to_pandas()
    seen = frame.groupby("order_date")[BUCKET].agg(["min", "max", "nunique"])
    starts = [0, 3, 5]
    for i, lake_day in enumerate(lake):
        row = seen.loc[lake_day.day]
        assert (row["min"], row["max"], row["nunique"]) == (starts[i], starts[i] + counts[i] - 1, counts[i])


def _exchanges(buckets_per_day, most: int) -> list[int]:
    """The bucket count of each exchange when days, in order, share one until the next day would
    carry it past ``most`` buckets."""
    wanted, held = [], None
    for buckets in buckets_per_day:
        if held is None or held + buckets > most:
            wanted.append(0)
            held = 0
        wanted[-1] += buckets
        held += buckets
    return wanted


def test_a_window_of_many_split_days_shares_exchanges_of_bounded_buckets(
    sample_dir, full_warehouse, tmp_path, monkeypatch
):
    """Consecutive split days share an exchange up to ``EXCHANGE_BUCKETS_MOST`` buckets, then
    start the next; the tables are those of the whole-day read."""
    from etl_assets import definitions as d
    from etl_assets.sources import orders_lake

    monkeypatch.setattr(orders_lake, "BUCKET_ROWS", 150)
    monkeypatch.setattr(orders_lake, "EXCHANGE_BUCKETS_MOST", 10)
    days = [day(i) for i in range(SAMPLE_DAYS)]
    lake = orders_lake.inspect_days(str(sample_dir / "sources" / "lake" / "orders"), days)
    per_day = [-(-x.rows // 150) for x in lake]
    assert all(3 <= b <= 10 for b in per_day)  # every day split, and fits an exchange alone
    exchanged = []
    real_exchange = orders_lake.exchange
    monkeypatch.setattr(
        orders_lake, "exchange", lambda *args: exchanged.append(args[1]) or real_exchange(*args)
    )
    split = tmp_path / "split"
    assert run_window(sample_dir, split, days[0], days[-1], [d.orders_and_rejects], with_checks=False).success
    wanted = _exchanges(per_day, 10)
    assert exchanged == wanted and len(wanted) > 1
    names = ["orders", "orders_rejects"]
    whole, got = snapshot(full_warehouse, names), snapshot(split, names)
    for name in names:
        assert len(whole[name]) > 0
        pd.testing.assert_frame_equal(whole[name], got[name], check_exact=True, obj=name)


def _files_per_day(warehouse, name: str, column: str) -> Counter:
    """Files of a Delta table per value of its partition column, from its log."""
    files = pa.table(DeltaTable(str(warehouse / name)).get_add_actions(flatten=True)).to_pydict()
    return Counter(str(v) for v in files[f"partition.{column}"])


def test_daily_metrics_are_exchanged_in_buckets_of_one_day(sample_dir, full_warehouse, tmp_path, monkeypatch):
    """Each day of the window gets metrics buckets of its own, one per ``BUCKET_ROWS`` of its
    customer orders, so the table has a file per non-empty bucket (the 7-day run: one per day)
    rather than one per bucket per day; days past an exchange's ``EXCHANGE_BUCKETS_MOST`` buckets
    start the next exchange. The table is the default layout's (which equals DuckDB, above)."""
    from etl_assets import definitions as d
    from etl_assets import ray_steps
    from etl_assets.assets import marts
    from etl_assets.transforms.common import hash_buckets

    days = [day(i).isoformat() for i in range(SAMPLE_DAYS)]
    assert _files_per_day(full_warehouse, DAILY_CUSTOMER_METRICS.name, "metric_date") == dict.fromkeys(
        days, 1
    )

    monkeypatch.setattr(ray_steps, "BUCKET_ROWS", 100)
    monkeypatch.setattr(ray_steps, "EXCHANGE_BUCKETS_MOST", 10)
    exchanged = []  # the bucket count of each exchange the metrics build
    real_exchange = marts.exchange
    monkeypatch.setattr(marts, "exchange", lambda *args: exchanged.append(args[1]) or real_exchange(*args))
    warehouse = tmp_path / "warehouse"
    shutil.copytree(full_warehouse, warehouse)
    shutil.rmtree(warehouse / DAILY_CUSTOMER_METRICS.name)
    assert run_window(
        sample_dir, warehouse, day(0), day(SAMPLE_DAYS - 1), [d.daily_customer_metrics], with_checks=False
    ).success

    orders = read_table(full_warehouse, CUSTOMER_ORDERS.name)
    orders["order_date"] = orders["order_date"].astype(str)
    per_day = {d_: -(-int((orders["order_date"] == d_).sum()) // 100) for d_ in days}
    assert all(2 <= b <= 10 for b in per_day.values())  # several buckets a day, each day fits 10
    wanted = _exchanges(per_day.values(), 10)
    assert exchanged == wanted and len(wanted) > 1
    # A day's customers fall in its buckets by a hash of their id: a file per bucket they fill.
    filled = {
        d_: len(set(hash_buckets(pa.array(orders.loc[orders["order_date"] == d_, "customer_id"]), b)))
        for d_, b in per_day.items()
    }
    assert _files_per_day(warehouse, DAILY_CUSTOMER_METRICS.name, "metric_date") == filled
    assert sum(filled.values()) > 2 * SAMPLE_DAYS
    name = DAILY_CUSTOMER_METRICS.name
    whole, got = snapshot(full_warehouse, [name])[name], snapshot(warehouse, [name])[name]
    assert len(whole) > 0
    pd.testing.assert_frame_equal(whole, got, check_exact=True, obj=name)


def test_a_lone_day_with_rows_enough_is_judged_on_every_cpu(sample_dir, tmp_path, monkeypatch):
    """A one-day window whose day fits in one bucket but holds twice ``SPLIT_ROWS`` rows is split
    into one bucket per CPU (the session's Ray has two), where reading it whole would leave a CPU
    idle; its tables are those of the whole-day read."""
    from etl_assets import definitions as d
    from etl_assets.sources import orders_lake

    assets = [d.raw_customers, d.customers, d.orders_and_rejects, d.customer_orders]
    whole = tmp_path / "whole"
    assert run_window(sample_dir, whole, day(0), day(0), assets, with_checks=False).success
    assert len(DeltaTable(str(whole / "orders")).file_uris()) == 1  # the whole day: one task, one file
    # The sample's day holds ~600 lake rows: with this, it is worth two buckets of about 300.
    monkeypatch.setattr(orders_lake, "SPLIT_ROWS", 250)
    split = tmp_path / "split"
    assert run_window(sample_dir, split, day(0), day(0), assets, with_checks=False).success
    assert len(DeltaTable(str(split / "orders")).file_uris()) == 2
    names = [CUSTOMER_ORDERS.name, "orders", "orders_rejects"]
    wanted, got = snapshot(whole, names), snapshot(split, names)
    for name in names:
        assert len(wanted[name]) > 0
        pd.testing.assert_frame_equal(wanted[name], got[name], check_exact=True, obj=name)


def test_in_a_window_only_the_days_over_a_bucket_are_exchanged(sample_dir, tmp_path, monkeypatch):
    """A window holding one day over a bucket: that day is judged in buckets, the others are read
    whole (one file each), and the tables are those of the whole-day read."""
    from etl_assets import definitions as d
    from etl_assets.sources import orders_lake

    days = [day(i) for i in range(3)]
    sizes = {
        x.day: x.rows for x in orders_lake.inspect_days(str(sample_dir / "sources" / "lake" / "orders"), days)
    }
    biggest = max(sizes, key=sizes.get)
    assert sorted(sizes.values())[-2] < sizes[biggest]  # one day alone over the bucket below

    whole = tmp_path / "whole"
    assert run_window(sample_dir, whole, days[0], days[-1], [d.orders_and_rejects], with_checks=False).success
    monkeypatch.setattr(orders_lake, "BUCKET_ROWS", sizes[biggest] - 1)
    exchanged = []  # the bucket count of each exchange the read builds
    real_exchange = orders_lake.exchange
    monkeypatch.setattr(
        orders_lake, "exchange", lambda *args: exchanged.append(args[1]) or real_exchange(*args)
    )
    split = tmp_path / "split"
    assert run_window(sample_dir, split, days[0], days[-1], [d.orders_and_rejects], with_checks=False).success
    per_day = _files_per_day(split, "orders", "order_date")
    assert per_day == {str(x): (2 if x == biggest else 1) for x in days}
    assert exchanged == [2]  # the small days went by no exchange of their own
    names = ["orders", "orders_rejects"]
    wanted, got = snapshot(whole, names), snapshot(split, names)
    for name in names:
        assert len(wanted[name]) > 0
        pd.testing.assert_frame_equal(wanted[name], got[name], check_exact=True, obj=name)


def test_a_warehouse_folder_given_relative_to_the_current_folder_is_the_one_written(
    sample_dir, tmp_path, monkeypatch
):
    from etl_assets import definitions

    monkeypatch.chdir(tmp_path)
    relative = WarehouseResource(root="relative/warehouse")
    assert run_window(sample_dir, relative, day(0), day(0), assets=[definitions.orders_and_rejects]).success
    duck = expected.connect(sample_dir)
    wanted = expected.table(duck, "orders", f"order_date = DATE '{day(0).isoformat()}'")
    stored = read_table(tmp_path / "relative" / "warehouse", "orders")
    assert_same_table(stored, wanted, ["order_id"], ORDERS.column_names)
