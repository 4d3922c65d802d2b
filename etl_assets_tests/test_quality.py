"""Data quality end to end: blocking checks, checks of stored rows, schema drift, refused writes."""

import shutil
import sqlite3
from datetime import date
from decimal import Decimal

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import ray
from deltalake import DeltaTable, write_deltalake

from etl_assets import definitions
from etl_assets.checks import contract_checks
from etl_assets.checks.rules import check_named, checks_alone, checks_of
from etl_assets.contracts import ORDERS, conform
from etl_assets.contracts.validation import ContractViolation
from etl_assets.warehouse.delta import DeltaWarehouse
from etl_assets_tests.conftest import (
    DAILY_ASSETS,
    SAMPLE_DAYS,
    day,
    read_table,
    resources,
    run_window,
)


def run_check_alone(sample, warehouse, check_name: str, asset, partition_key: str | None):
    """Execute one check only, as the UI's "Execute check" does."""
    check = check_named(check_name)
    defs = dg.Definitions(assets=[asset], asset_checks=[check], resources=resources(sample, warehouse))
    result = checks_alone(defs.resolve_implicit_global_asset_job_def(), [check_name]).execute_in_process(
        partition_key=partition_key, instance=dg.DagsterInstance.ephemeral(), raise_on_error=False
    )
    return result.get_asset_check_evaluations()


def test_a_blocking_reject_rate_failure_stops_downstream_assets_in_the_same_run(sample_dir, tmp_path):
    # Any rejected row breaks a zero threshold, so the check fails on both days of the run.
    result = dg.materialize(
        DAILY_ASSETS + checks_of(DAILY_ASSETS),
        resources=resources(sample_dir, tmp_path / "w"),
        tags={
            "dagster/asset_partition_range_start": day(0).isoformat(),
            "dagster/asset_partition_range_end": day(1).isoformat(),
        },
        run_config={"ops": {"orders_orders_reject_rate": {"config": {"max_rate": 0.0}}}},
        raise_on_error=False,
    )
    assert not result.success
    rate = {
        e.partition: e for e in result.get_asset_check_evaluations() if e.check_name == "orders_reject_rate"
    }
    assert set(rate) == {day(0).isoformat(), day(1).isoformat()}
    assert not any(e.passed for e in rate.values())
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "orders" in materialized
    assert not materialized & {"customer_orders", "daily_customer_metrics"}
    assert not (tmp_path / "w" / "customer_orders").exists()


def test_a_check_that_cannot_run_lets_its_steps_other_checks_report_and_blocks_nothing(
    sample_dir, tmp_path, monkeypatch
):
    """A table's non-blocking contract checks share a step: one that raises (here every table's
    rules check) fails the step after the others have reported, and the assets downstream are
    still built, as when each check had a step of its own."""

    def cannot_run(*args, **kwargs):
        raise RuntimeError("the rules could not be read")

    monkeypatch.setattr(contract_checks, "contract_outcomes", cannot_run)
    result = dg.materialize(
        DAILY_ASSETS + checks_of(DAILY_ASSETS),
        resources=resources(sample_dir, tmp_path / "w"),
        partition_key=day(0).isoformat(),
        raise_on_error=False,
    )
    assert not result.success
    tables = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert {"orders", "customer_orders", "daily_customer_metrics"} <= tables
    reported = {e.check_name for e in result.get_asset_check_evaluations()}
    # Every check of the chain reported but the rules checks, which could not run.
    every = {key.name for check in checks_of(DAILY_ASSETS) for key in check.check_keys}
    assert reported == {name for name in every if not name.endswith("_contract_rules")}
    # Dagster wraps the check's own error, its cause.
    failed = {
        e.step_key: e.event_specific_data.error.cause.message
        for e in result.all_events
        if e.event_type == dg.DagsterEventType.STEP_FAILURE
    }
    contract_steps = {
        c.node_def.name for c in checks_of(DAILY_ASSETS) if c.node_def.name.endswith("_contract_checks")
    }
    assert set(failed) == contract_steps
    assert all("the rules could not be read" in message for message in failed.values())


def test_a_step_whose_checks_cannot_run_names_each_of_them(sample_dir, tmp_path, monkeypatch):
    def cannot_run(*args, **kwargs):
        raise RuntimeError("the table could not be read")

    monkeypatch.setattr(contract_checks, "contract_outcomes", cannot_run)
    monkeypatch.setattr(contract_checks, "key_outcomes", cannot_run)
    orders_checks = check_named("orders_contract_rules")
    result = dg.materialize(
        [definitions.orders_and_rejects, orders_checks],
        resources=resources(sample_dir, tmp_path / "w"),
        partition_key=day(0).isoformat(),
        raise_on_error=False,
    )
    (failure,) = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert failure.step_key == orders_checks.node_def.name
    assert failure.event_specific_data.error.cause.message.startswith(
        "RuntimeError: 2 checks could not run: orders_contract_rules: the table could not be read; "
        "orders_key_unique: the table could not be read"
    )
    reported = {e.check_name for e in result.get_asset_check_evaluations()}
    assert reported == {"orders_schema_matches_contract", "orders_row_count_anomaly"}


def _corrupt(path: str, amount_rows: int, fax_rows: int) -> None:
    """Rewrite a Delta table behind the platform's back."""
    table = DeltaTable(path).to_pyarrow_table()
    amounts = table.column("order_amount").to_numpy().copy()
    amounts[:amount_rows] = -amounts[:amount_rows]
    channels = table.column("channel").to_pylist()
    channels[:fax_rows] = ["fax"] * fax_rows
    table = table.set_column(table.schema.get_field_index("order_amount"), "order_amount", pa.array(amounts))
    table = table.set_column(table.schema.get_field_index("channel"), "channel", pa.array(channels))
    write_deltalake(path, table, mode="overwrite", partition_by=["order_date"])


def test_contract_check_counts_and_samples_rows_broken_after_the_load(sample_dir, tmp_path, checks_path):
    warehouse = tmp_path / "w"
    assert run_window(sample_dir, warehouse, day(0), day(0), assets=[definitions.orders_and_rejects]).success
    path = str(warehouse / "orders")
    key = day(0).isoformat()

    _corrupt(path, amount_rows=0, fax_rows=2)  # soft rule only: a warning
    [soft] = run_check_alone(
        sample_dir, warehouse, "orders_contract_rules", definitions.orders_and_rejects, key
    )
    assert (soft.passed, soft.severity, soft.partition) == (False, dg.AssetCheckSeverity.WARN, key)
    assert soft.metadata["rule_failures"].value == {"channel.isin": 2}

    _corrupt(path, amount_rows=3, fax_rows=2)  # a rejecting rule: an error, with a sample
    [hard] = run_check_alone(
        sample_dir, warehouse, "orders_contract_rules", definitions.orders_and_rejects, key
    )
    assert (hard.passed, hard.severity) == (False, dg.AssetCheckSeverity.ERROR)
    assert hard.metadata["rule_failures"].value == {"order_amount.greater_than": 3, "channel.isin": 2}
    sample = hard.metadata["failing_row_samples"].value["order_amount.greater_than"]
    assert len(sample) == 3 and all(row["order_amount"] < 0 for row in sample)
    assert hard.metadata["rows_checked"].value == len(read_table(warehouse, "orders"))


def test_schema_check_names_a_column_added_to_the_stored_table(sample_dir, tmp_path):
    warehouse = tmp_path / "w"
    assert run_window(sample_dir, warehouse, day(0), day(0), assets=[definitions.orders_and_rejects]).success
    [ok] = run_check_alone(
        sample_dir, warehouse, "orders_schema_matches_contract", definitions.orders_and_rejects, None
    )
    assert ok.passed
    path = str(warehouse / "orders")
    table = DeltaTable(path).to_pyarrow_table()
    table = table.append_column("coupon", pa.array(["x"] * table.num_rows))
    write_deltalake(path, table, mode="overwrite", schema_mode="overwrite", partition_by=["order_date"])
    [drifted] = run_check_alone(
        sample_dir, warehouse, "orders_schema_matches_contract", definitions.orders_and_rejects, None
    )
    assert not drifted.passed
    assert drifted.metadata["problem"].value == "column coupon (string) is not in the contract"


def test_the_writer_refuses_rows_that_break_the_contract_and_leaves_the_table(tmp_path):
    wh = DeltaWarehouse(str(tmp_path))
    rows = {
        "order_id": [1, 2],
        "customer_id": [10, 11],
        "order_ts": pa.array([1704189600000000] * 2, pa.timestamp("us", tz="UTC")),
        "order_amount": [5.0, 6.0],
        "quantity": pa.array([1, 1], pa.int32()),
        "channel": ["web", "web"],
        "order_date": pa.array([date(2024, 1, 2)] * 2, pa.date32()),
    }
    good = conform(pa.table(rows), ORDERS)
    wh.replace_window(ray.data.from_arrow(good), [ORDERS], [date(2024, 1, 2)])
    version = DeltaTable(str(tmp_path / "orders")).version()
    bad = good.set_column(3, "order_amount", pa.array([5.0, -6.0]))
    with pytest.raises(
        ContractViolation, match=r"orders: rows break the contract: order_amount\.greater_than"
    ):
        wh.replace_window(ray.data.from_arrow(bad), [ORDERS], [date(2024, 1, 2)])
    table = DeltaTable(str(tmp_path / "orders"))
    assert table.version() == version
    assert pc.sum(table.to_pyarrow_table().column("order_amount")).as_py() == 11.0


def test_a_column_added_to_the_crm_is_ignored_with_a_warning(sample_dir, tmp_path):
    sample = tmp_path / "sample"
    shutil.copytree(sample_dir / "sources", sample / "sources")
    with sqlite3.connect(sample / "sources" / "crm.db") as crm:
        crm.execute("ALTER TABLE customers ADD COLUMN loyalty_tier TEXT")
    result = run_window(sample, tmp_path / "w", day(0), day(0), assets=[definitions.raw_customers])
    assert result.success
    metadata = result.asset_materializations_for_node("raw_customers")[0].metadata
    assert metadata["source_columns_ignored"].value == ["loyalty_tier"]
    assert "loyalty_tier" not in read_table(tmp_path / "w", "raw_customers").columns


def test_a_corrupted_upstream_table_does_not_propagate_downstream(sample_dir, tmp_path):
    warehouse = tmp_path / "w"
    upstream = [definitions.raw_customers, definitions.customers, definitions.orders_and_rejects]
    assert run_window(sample_dir, warehouse, day(0), day(0), assets=upstream, with_checks=False).success
    _corrupt(str(warehouse / "orders"), amount_rows=3, fax_rows=0)
    result = run_window(
        sample_dir,
        warehouse,
        day(0),
        day(0),
        assets=[definitions.customer_orders],
        with_checks=False,
        raise_on_error=False,
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.event_specific_data.error.to_string()
    assert "customer_orders: rows break the contract: order_amount.greater_than (3 rows)" in message
    assert sum(e.event_type_value == "STEP_UP_FOR_RETRY" for e in result.all_events) == 0
    assert not DeltaTable.is_deltatable(str(warehouse / "customer_orders"))


def test_a_crm_row_breaking_the_contract_fails_the_run_naming_table_and_column(sample_dir, tmp_path):
    sample = tmp_path / "sample"
    shutil.copytree(sample_dir / "sources", sample / "sources")
    with sqlite3.connect(sample / "sources" / "crm.db") as crm:
        crm.execute(
            "UPDATE customers SET customer_id = NULL WHERE rowid = "
            "(SELECT min(rowid) FROM customers WHERE date(updated_at) = ?)",
            (day(0).isoformat(),),
        )
    result = run_window(
        sample, tmp_path / "w", day(0), day(0), assets=[definitions.raw_customers], raise_on_error=False
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "raw_customers.customer_id: 1 null value(s) in a non-null column" in (
        failure.event_specific_data.error.to_string()
    )
    # A contract violation does not go away by waiting: no retries.
    assert sum(e.event_type_value == "STEP_UP_FOR_RETRY" for e in result.all_events) == 0


def test_a_merge_refuses_rows_that_break_the_contract_with_its_own_error(tmp_path):
    from etl_assets.contracts import HOURLY_USER_METRICS

    wh = DeltaWarehouse(str(tmp_path))
    hour = pa.array([1704189600000000], pa.timestamp("us", tz="UTC"))
    good = pa.table(
        {
            "event_hour": hour,
            "user_id": [1],
            "event_count": [2],
            "total_session_duration": [4.0],
            "avg_session_duration": [2.0],
        }
    )
    wh.merge(ray.data.from_arrow(good), HOURLY_USER_METRICS)
    bad = good.set_column(2, "event_count", pa.array([0]))
    with pytest.raises(
        ContractViolation, match=r"hourly_user_metrics: .*event_count\.greater_than_or_equal_to"
    ):
        wh.merge(ray.data.from_arrow(bad), HOURLY_USER_METRICS)
    assert DeltaTable(str(tmp_path / "hourly_user_metrics")).to_pyarrow_table().column(
        "event_count"
    ).to_pylist() == [2]


def test_checks_read_each_partitions_duplicates_from_its_latest_materialization():
    """The accounting checks read the duplicates a partition's last load left out, whether that
    load wrote per-partition metadata or (before it did) one dict by partition for its window."""
    from etl_assets.checks.partitioned import latest_counts, latest_materializations
    from etl_assets.checks.rules import EVENT_DUPLICATES, ORDER_DUPLICATES

    instance = dg.DagsterInstance.ephemeral()

    def materialize(asset: str, partition: str, **metadata) -> None:
        instance.report_runless_asset_event(
            dg.AssetMaterialization(asset, partition=partition, metadata=metadata)
        )

    # An old two-day run: the run's total on both days, the split in a dict.
    for d in ("2024-01-01", "2024-01-02"):
        materialize(
            "orders", d, duplicates_collapsed=7, duplicates_per_day={"2024-01-01": 3, "2024-01-02": 4}
        )
    materialize("orders", "2024-01-02", duplicates_collapsed=5)  # re-loaded since, on its own
    days = ["2024-01-01", "2024-01-02", "2024-01-03"]
    orders = latest_materializations(instance, dg.AssetKey("orders"), days)
    assert latest_counts(orders, days, ORDER_DUPLICATES) == {
        "2024-01-01": 3,
        "2024-01-02": 5,
        "2024-01-03": 0,
    }
    materialize("events", "b1", duplicates_in_load=2, duplicates_already_loaded=9)
    events = latest_materializations(instance, dg.AssetKey("events"), ["b1"])
    assert latest_counts(events, ["b1"], EVENT_DUPLICATES) == {"b1": 11}


def test_latest_materializations_reads_each_record_once_and_follows_new_loads():
    """A run's checks ask for the same partitions' records again and again: each is read from the
    instance once, a partition loaded since is read anew, and another instance's records (with the
    same storage ids) never answer."""
    from etl_assets.checks import partitioned
    from etl_assets.checks.partitioned import latest_materializations

    def with_loads(instance: dg.DagsterInstance, duplicates: int) -> None:
        for d in ("2024-01-01", "2024-01-02"):
            instance.report_runless_asset_event(
                dg.AssetMaterialization("orders", partition=d, metadata={"duplicates_collapsed": duplicates})
            )

    first, second = dg.DagsterInstance.ephemeral(), dg.DagsterInstance.ephemeral()
    with_loads(first, 1)
    with_loads(second, 2)
    fetched: list[int] = []
    for instance in (first, second):
        fetch = instance.fetch_materializations

        def counted(records_filter, limit, fetch=fetch, **kwargs):
            fetched.append(len(records_filter.storage_ids))
            return fetch(records_filter, limit, **kwargs)

        instance.fetch_materializations = counted
    days = ["2024-01-01", "2024-01-02", "2024-01-03"]

    def duplicates(instance: dg.DagsterInstance) -> dict[str, int]:
        latest = latest_materializations(instance, dg.AssetKey("orders"), days)
        return {
            d: record.asset_materialization.metadata["duplicates_collapsed"].value
            for d, record in latest.items()
        }

    assert duplicates(first) == {"2024-01-01": 1, "2024-01-02": 1}
    assert duplicates(first) == {"2024-01-01": 1, "2024-01-02": 1}
    assert fetched == [2]
    assert duplicates(second) == {"2024-01-01": 2, "2024-01-02": 2}
    assert fetched == [2, 2]
    first.report_runless_asset_event(
        dg.AssetMaterialization("orders", partition="2024-01-02", metadata={"duplicates_collapsed": 5})
    )
    assert duplicates(first) == {"2024-01-01": 1, "2024-01-02": 5}
    assert fetched == [2, 2, 1]
    # A record kept under the storage id of another asset's event (as when SQLite gives a deleted
    # event's id again) does not answer for it: the event is read.
    first.report_runless_asset_event(dg.AssetMaterialization("events", partition="2024-01-01"))
    events_id = first.event_log_storage.get_latest_storage_id_by_partition(
        dg.AssetKey("events"), dg.DagsterEventType.ASSET_MATERIALIZATION, {"2024-01-01"}
    )["2024-01-01"]
    orders_record = latest_materializations(first, dg.AssetKey("orders"), days)["2024-01-01"]
    partitioned._READ[first.event_log_storage][events_id] = orders_record
    events = latest_materializations(first, dg.AssetKey("events"), days)
    assert events["2024-01-01"].asset_key == dg.AssetKey("events")
    assert events["2024-01-01"].storage_id == events_id
    assert fetched == [2, 2, 1, 1]


def test_key_check_finds_keys_repeated_after_the_load_within_their_day(sample_dir, tmp_path, checks_path):
    warehouse = tmp_path / "w"
    assert run_window(sample_dir, warehouse, day(0), day(1), assets=[definitions.orders_and_rejects]).success
    path = str(warehouse / "orders")
    table = DeltaTable(path).to_pyarrow_table()
    first_day = table.filter(pc.equal(table.column("order_date"), pa.scalar(day(0), pa.date32())))
    # Two orders of day 0 delivered again, one of them twice; a day-0 id reused on day 1 is no
    # duplicate within a day.
    again = first_day.take([0, 1, 1])
    column = table.schema.get_field_index("order_date")
    moved = first_day.take([2]).set_column(
        column, table.schema.field(column), pa.array([day(1)], pa.date32())
    )
    write_deltalake(
        path, pa.concat_tables([table, again, moved]), mode="overwrite", partition_by=["order_date"]
    )

    found = {
        e.partition: e
        for key in (day(0).isoformat(), day(1).isoformat())
        for e in run_check_alone(
            sample_dir, warehouse, "orders_key_unique", definitions.orders_and_rejects, key
        )
    }
    assert not found[day(0).isoformat()].passed
    ids = first_day.column("order_id").to_pylist()
    assert found[day(0).isoformat()].metadata["duplicate_keys"].value == 2
    assert found[day(0).isoformat()].metadata["sample"].value == sorted(
        [{"order_id": ids[0], "count_all": 2}, {"order_id": ids[1], "count_all": 3}],
        key=lambda r: r["order_id"],
    )
    assert found[day(1).isoformat()].passed


def test_current_version_check_counts_customers_with_no_or_several_current_versions(
    sample_dir, tmp_path, checks_path
):
    warehouse = tmp_path / "w"
    crm = [definitions.raw_customers, definitions.customers]
    assert run_window(
        sample_dir, warehouse, day(0), day(SAMPLE_DAYS - 1), assets=crm, with_checks=False
    ).success
    path = str(warehouse / "customers")
    table = DeltaTable(path).to_pyarrow_table()
    ids = table.column("customer_id").to_pylist()
    current = table.column("is_current").to_pylist()
    versioned = sorted({i for i in ids if ids.count(i) > 1})
    closed, demoted = versioned[:2]
    # One customer loses its current version (its open row is left not current), another gets
    # an old version marked current, a third has its current row stored twice.
    old = next(n for n, (i, c) in enumerate(zip(ids, current)) if i == demoted and not c)
    flags = [(c and i != closed) or n == old for n, (i, c) in enumerate(zip(ids, current))]
    doubled = next(i for i in sorted(set(ids)) if i not in (closed, demoted))
    table = table.set_column(
        table.schema.get_field_index("is_current"), table.schema.field("is_current"), pa.array(flags)
    )
    twice = table.filter(pc.and_(pc.equal(table.column("customer_id"), doubled), table.column("is_current")))
    table = pa.concat_tables([table, twice])
    write_deltalake(path, table, mode="overwrite")

    (found,) = run_check_alone(sample_dir, warehouse, "customers_one_current_version", crm[1], None)
    frame = table.to_pandas()
    per_customer = frame.groupby("customer_id")["is_current"].sum()
    wrong = per_customer[per_customer != 1].sort_index()
    assert not found.passed
    assert {k: v.value for k, v in found.metadata.items() if k != "sample"} == {
        "customers": len(per_customer),
        "current_rows": int(frame["is_current"].sum()),
        "customers_without_current": int((per_customer == 0).sum()),
        "customers_with_several_current": int((per_customer > 1).sum()),
        "open_rows_not_current": int((frame["valid_to"].isna() & ~frame["is_current"]).sum()),
    }
    assert (wrong == 0).sum() == 1 and (wrong > 1).sum() == 2
    assert found.metadata["sample"].value == [
        {"customer_id": int(k), "current_versions": int(v)} for k, v in wrong.head(5).items()
    ]


def test_transactions_reconciliation_names_each_status_that_differs_from_the_crm(
    sample_dir, tmp_path, checks_path
):
    warehouse = tmp_path / "w"
    assert dg.materialize([definitions.transactions], resources=resources(sample_dir, warehouse)).success
    path = str(warehouse / "transactions")
    table = DeltaTable(path).to_pyarrow_table()
    statuses = sorted(set(table.column("status").to_pylist()))
    status = table.column("status").to_pylist()
    # A row of the first status lost, a cent added to a row of the second.
    lost = status.index(statuses[0])
    changed = status.index(statuses[1])
    amounts = table.column("amount").to_pylist()
    amounts[changed] += Decimal("0.01")
    field = table.schema.field("amount")
    table = table.set_column(table.schema.get_field_index("amount"), field, pa.array(amounts, field.type))
    table = pa.concat_tables([table.slice(0, lost), table.slice(lost + 1)])
    write_deltalake(path, table, mode="overwrite")

    (found,) = run_check_alone(
        sample_dir, warehouse, "transactions_reconcile_with_source", definitions.transactions, None
    )
    with sqlite3.connect(sample_dir / "sources" / "crm.db") as conn:
        source = pd.DataFrame(
            conn.execute("SELECT status, amount FROM transactions").fetchall(), columns=["status", "amount"]
        )

    def totals(frame: pd.DataFrame) -> dict:
        amounts = frame["amount"].map(lambda a: Decimal(str(a)))
        return {s: [int(len(g)), f"{amounts[g.index].sum():.2f}"] for s, g in frame.groupby("status")}

    ours, theirs = totals(table.to_pandas()), totals(source)
    assert not found.passed
    assert found.metadata["differences"].value == {
        s: {"source": theirs[s], "warehouse": ours[s]} for s in statuses[:2]
    }
    assert all(ours[s] == theirs[s] for s in statuses[2:])


@pytest.mark.parametrize(
    ("check_name", "asset"),
    [
        ("customers_one_current_version", definitions.customers),
        ("transactions_reconcile_with_source", definitions.transactions),
    ],
)
def test_a_whole_table_check_of_a_table_never_built_fails_naming_it(sample_dir, tmp_path, check_name, asset):
    (found,) = run_check_alone(sample_dir, tmp_path / "empty", check_name, asset, None)
    assert not found.passed
    table = asset.key.path[-1]
    assert found.metadata["problem"].value == f"the table {table} does not exist in the warehouse"
