"""The floors benchmark measures Dagster's own cost of the daily chain's backfill with a copy of its
graph whose bodies only report; the floor is only a floor of the real runs if that copy records
what they record: the same assets, partitions and checks, one result per partition."""

import dagster as dg

from benchmarks import backfill
from benchmarks.backfill import range_tags
from benchmarks.fixed_cost import timeline
from benchmarks.floors import SQLITE_CONSOLIDATED, _instance, reporting_graph
from benchmarks.instance_config import EVENT_LOGS, write_instance_yaml
from etl_assets.definitions import defs
from etl_assets_tests.expected import DAILY_TABLES

DAILY_CHAIN = set(DAILY_TABLES)
DAYS = ["2024-01-01", "2024-01-02"]


def _as_definitions(graph: list) -> dg.Definitions:
    checks = [node for node in graph if isinstance(node, dg.AssetChecksDefinition)]
    return dg.Definitions(assets=[node for node in graph if node not in checks], asset_checks=checks)


def _real_graph():
    """The real daily chain's assets and checks, from the code location's own asset graph."""
    graph = defs.resolve_asset_graph()
    assets = {key for key in graph.materializable_asset_keys if key.to_user_string() in DAILY_CHAIN}
    return graph, assets, {key for key in graph.asset_check_keys if key.asset_key in assets}


def test_reporting_graph_has_the_daily_chains_assets_checks_steps_and_partitions():
    real, assets, checks = _real_graph()
    graph = reporting_graph()
    mirror = _as_definitions(graph).resolve_asset_graph()
    # The same check steps, each with the same checks: each step costs Dagster its own events.
    steps = {
        node.node_def.name: set(node.check_keys)
        for node in graph
        if isinstance(node, dg.AssetChecksDefinition)
    }
    assert steps == {check.node_def.name: set(check.check_keys) for check in backfill.ASSET_CHECKS}
    assert any(len(keys) > 1 for keys in steps.values())  # the tables' shared steps
    assert mirror.materializable_asset_keys == assets
    assert mirror.asset_check_keys == checks
    for key in assets:
        assert mirror.get(key).partitions_def == real.get(key).partitions_def
        assert mirror.get(key).backfill_policy == real.get(key).backfill_policy
        assert mirror.get(key).parent_keys == real.get(key).parent_keys
        assert mirror.get(key).pools == real.get(key).pools
    for key in checks:
        assert mirror.get(key).partitions_def == real.get(key).partitions_def
        assert mirror.get(key).blocking == real.get(key).blocking
    without_checks = _as_definitions(reporting_graph(with_checks=False)).resolve_asset_graph()
    assert without_checks.materializable_asset_keys == assets
    assert not without_checks.asset_check_keys


def test_reporting_graph_records_one_result_per_partition():
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(reporting_graph(), instance=instance, tags=range_tags(0, len(DAYS) - 1))
    assert result.success
    events = [entry.dagster_event for entry in instance.all_logs(result.run_id) if entry.dagster_event]
    materialized = sorted(
        (event.asset_key.to_user_string(), event.partition)
        for event in events
        if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION
    )
    assert materialized == sorted((name, day) for name in DAILY_CHAIN for day in DAYS)
    evaluated: dict[dg.AssetCheckKey, list] = {}
    for event in events:
        if event.event_type == dg.DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluation = event.event_specific_data
            assert evaluation.passed
            evaluated.setdefault(evaluation.asset_check_key, []).append(evaluation.partition)
    # A partitioned check reports each day of the window, as the real ones do; a whole-table check once.
    real, _, checks = _real_graph()
    assert {key: sorted(p, key=str) for key, p in evaluated.items()} == {
        key: DAYS if real.get(key).partitions_def else [None] for key in checks
    }


def test_the_consolidated_event_log_records_what_the_default_records(tmp_path):
    """``fixed_cost`` and ``floors`` weigh Dagster's consolidated SQLite event log against the
    default: the same run must record the same events on both, the consolidated one in one file."""
    recorded = {}
    for event_log in EVENT_LOGS:
        home = tmp_path / event_log
        write_instance_yaml(home, event_log)
        instance = dg.DagsterInstance.from_config(str(home))
        try:
            result = dg.materialize(reporting_graph(), instance=instance, tags=range_tags(0, len(DAYS) - 1))
            assert result.success
            recorded[event_log] = sorted(
                (entry.dagster_event_type.value, entry.step_key or "", str(entry.dagster_event.partition))
                for entry in instance.all_logs(result.run_id)
                if entry.dagster_event
            )
            storage = type(instance.event_log_storage).__name__
        finally:
            instance.dispose()
        if event_log == "consolidated":
            assert storage == "ConsolidatedSqliteEventLogStorage"
            assert (home / "history" / "event_log.db").is_file()
            assert not (home / "history" / "runs").exists()
        else:
            assert storage == "SqliteEventLogStorage"
            assert (home / "history" / "runs" / f"{result.run_id}.db").is_file()
    assert recorded["consolidated"] == recorded["sharded"]
    assert len(recorded["sharded"]) > 100
    # floors' variant is that event log, not the default under another name.
    variant = _instance(SQLITE_CONSOLIDATED, tmp_path / "floors_home", None)
    try:
        assert type(variant.event_log_storage).__name__ == "ConsolidatedSqliteEventLogStorage"
    finally:
        variant.dispose()


def test_the_timeline_splits_a_run_from_its_events():
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(reporting_graph(), instance=instance, tags=range_tags(0, len(DAYS) - 1))
    events = instance.all_logs(result.run_id)
    created = instance.get_run_record_by_id(result.run_id).create_timestamp.timestamp()
    started, ended = created - 1.5, events[-1].timestamp + 0.25
    split = timeline(events, created, started, ended)
    phases = [value for key, value in split.items() if key.endswith("_seconds")]
    assert split["to_run_created_seconds"] == 1.5
    assert split["to_process_exited_seconds"] == 0.25
    assert all(value >= 0 for value in phases)
    assert abs(sum(phases) - (ended - started)) < 0.01
    assert split["events"] == len(events)
    assert split["steps"] == len(reporting_graph()) == 16
