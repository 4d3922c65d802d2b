"""Event micro-batches: the landing sensor, parsing and rejects, de-duplication, hourly metrics."""

import json
import shutil
from pathlib import Path

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from deltalake import DeltaTable, write_deltalake

from etl_assets import definitions
from etl_assets.automation import events_landing_sensor
from etl_assets.checks.rules import check_named, checks_alone, events_nothing_lost
from etl_assets.resources import RayResource, SourcesResource, WarehouseResource
from etl_assets.sample_changes import drop_event_batch
from etl_assets_tests.conftest import PROVENANCE, read_table

EVENT_ASSETS = [definitions.events_and_rejects, definitions.hourly_user_metrics]
# A blocking check: a step of its own.
events_reject_rate = check_named("events_reject_rate")


@pytest.fixture
def landing_copy(sample_dir, tmp_path) -> Path:
    """A private copy of the sample's landing zone (tests add batches to it)."""
    root = tmp_path / "data"
    shutil.copytree(sample_dir / "sources" / "landing", root / "sources" / "landing")
    return root


def batches_of(data_dir: Path) -> list[str]:
    return sorted(p.name for p in (data_dir / "sources" / "landing" / "events").iterdir())


def resources_for(data_dir: Path, warehouse: Path) -> dict:
    return {
        "ray_cluster": RayResource(),
        "sources": SourcesResource(crm_url="sqlite:///unused.db", data_dir=str(data_dir)),
        "warehouse": WarehouseResource(root=str(warehouse)),
    }


def load(
    data_dir: Path,
    warehouse: Path,
    batch_ids: list[str],
    instance: dg.DagsterInstance,
    checks=False,
    expect_success=True,
):
    resources = resources_for(data_dir, warehouse)
    instance.add_dynamic_partitions("event_batches", batch_ids)
    results = []
    for batch_id in batch_ids:
        result = dg.materialize(
            EVENT_ASSETS + ([events_reject_rate, events_nothing_lost] if checks else []),
            partition_key=batch_id,
            resources=resources,
            instance=instance,
            raise_on_error=False,
        )
        assert result.success == expect_success
        results.append(result)
    return results


def expected_hourly(data_dir: Path, batch_ids: list[str]) -> pd.DataFrame:
    """Independent computation: json.loads every line, keep well-formed events, first copy of each id."""
    rows = []
    for batch_id in batch_ids:
        for path in sorted((data_dir / "sources" / "landing" / "events" / batch_id).glob("*.jsonl")):
            for line in path.read_text().splitlines():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue
    events = pd.DataFrame(rows).drop_duplicates("event_id")
    events["event_hour"] = pd.to_datetime(events["timestamp"], utc=True).dt.floor("h").dt.as_unit("us")
    out = (
        events.groupby(["event_hour", "user_id"])
        .agg(event_count=("event_id", "count"), total_session_duration=("session_duration", "sum"))
        .reset_index()
    )
    out["avg_session_duration"] = out["total_session_duration"] / out["event_count"]
    return out


def sorted_hourly(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    frame["event_hour"] = pd.to_datetime(frame["event_hour"], utc=True).dt.as_unit("us")
    return frame.sort_values(["event_hour", "user_id"]).reset_index(drop=True)


def test_sensor_registers_each_new_batch_once_and_requests_its_run(landing_copy):
    instance = dg.DagsterInstance.ephemeral()
    sources = SourcesResource(crm_url="sqlite:///unused.db", data_dir=str(landing_copy))
    first = events_landing_sensor(dg.build_sensor_context(instance=instance, resources={"sources": sources}))
    batches = batches_of(landing_copy)
    assert sorted(r.partition_key for r in first.run_requests) == batches
    assert sorted(r.run_key for r in first.run_requests) == batches
    assert first.dynamic_partitions_requests[0].partition_keys == batches
    instance.add_dynamic_partitions("event_batches", batches)

    again = events_landing_sensor(
        dg.build_sensor_context(instance=instance, cursor=first.cursor, resources={"sources": sources})
    )
    assert not again.run_requests

    # A half-written batch (hidden folder) is not picked up; once renamed, it is.
    hidden = landing_copy / "sources" / "landing" / "events" / ".incoming-x"
    hidden.mkdir()
    (hidden / "events.jsonl").write_text("{}\n")
    new = drop_event_batch(landing_copy / "sources" / "landing" / "events", batch_id="zz-new")
    third = events_landing_sensor(
        dg.build_sensor_context(
            instance=instance, cursor=again.cursor or first.cursor, resources={"sources": sources}
        )
    )
    assert [r.partition_key for r in third.run_requests] == [new.name]


@pytest.mark.parametrize("loaded_ids", ["among_the_loads", "all"])
def test_batches_in_any_order_give_the_same_hourly_metrics_equal_to_the_full_aggregate(
    landing_copy, tmp_path, monkeypatch, loaded_ids
):
    """``among_the_loads``: only the loaded ids a load repeats reach its de-duplication (its ids
    broadcast to the reads); ``all``: every loaded id does, as for a load of too many ids."""
    from etl_assets.assets import events

    if loaded_ids == "all":
        monkeypatch.setattr(events, "BROADCAST_IDS_MOST", 0)
    batches = batches_of(landing_copy)[:4]  # consecutive batches: later ones re-deliver earlier events
    in_order, reversed_order = tmp_path / "w1", tmp_path / "w2"
    load(landing_copy, in_order, batches, dg.DagsterInstance.ephemeral())
    load(landing_copy, reversed_order, list(reversed(batches)), dg.DagsterInstance.ephemeral())
    a = sorted_hourly(read_table(in_order, "hourly_user_metrics"))
    b = sorted_hourly(read_table(reversed_order, "hourly_user_metrics"))
    pd.testing.assert_frame_equal(a, b, check_exact=True)

    wanted = sorted_hourly(expected_hourly(landing_copy, batches))
    assert len(a) == len(wanted)
    assert a["event_count"].tolist() == wanted["event_count"].tolist()
    pd.testing.assert_series_equal(a["total_session_duration"], wanted["total_session_duration"], rtol=1e-9)
    pd.testing.assert_series_equal(a["avg_session_duration"], wanted["avg_session_duration"], rtol=1e-9)

    events = read_table(in_order, "events")
    assert events["event_id"].is_unique
    assert events["event_id"].nunique() == sum(wanted["event_count"])


def test_redelivered_batch_changes_nothing_and_duplicates_are_counted(landing_copy, tmp_path):
    batches = batches_of(landing_copy)[:2]
    instance = dg.DagsterInstance.ephemeral()
    results = load(landing_copy, tmp_path / "w", batches, instance)
    second_batch = {
        m.asset_key.to_user_string(): m.metadata
        for m in results[1].asset_materializations_for_node("events_and_rejects")
    }["events"]
    assert second_batch["duplicates_already_loaded"].value > 0
    before = {n: read_table(tmp_path / "w", n) for n in ("events", "events_rejects", "hourly_user_metrics")}
    versions = {n: DeltaTable(str(tmp_path / "w" / n)).version() for n in before}
    load(landing_copy, tmp_path / "w", [batches[1]], instance)
    for name, frame in before.items():
        # The rejects name the run that rejected them; everything else is unchanged.
        frame = frame.drop(columns=PROVENANCE, errors="ignore")
        after = read_table(tmp_path / "w", name).drop(columns=PROVENANCE, errors="ignore")
        keys = list(frame.columns)
        pd.testing.assert_frame_equal(
            frame.sort_values(keys).reset_index(drop=True),
            after.sort_values(keys).reset_index(drop=True),
            obj=name,
        )
        assert DeltaTable(str(tmp_path / "w" / name)).version() > versions[name]


def test_malformed_lines_are_rejected_with_file_line_and_reason(tmp_path):
    folder = tmp_path / "data" / "sources" / "landing" / "events" / "b1"
    folder.mkdir(parents=True)
    good = {
        "event_id": "g1",
        "user_id": 7,
        "event_type": "click",
        "timestamp": "2024-01-06T10:15:00Z",
        "session_duration": 12.5,
    }
    lines = [
        json.dumps(good),
        '{"event_id": "x1", "user_id": 7, "event_type": "click", "timestamp": "2024-01-06T10:',
        "",
        json.dumps({**good, "event_id": "x2", "timestamp": "last tuesday"}),
        json.dumps({**good, "event_id": "x3", "session_duration": -1}),
        json.dumps({**good, "event_id": "x4", "user_id": "seven"}),
    ]
    (folder / "part-1.jsonl").write_text("\n".join(lines) + "\n")
    instance = dg.DagsterInstance.ephemeral()
    results = load(tmp_path / "data", tmp_path / "w", ["b1"], instance, checks=True, expect_success=False)
    rejects = read_table(tmp_path / "w", "events_rejects").sort_values("line_number")
    assert rejects["line_number"].tolist() == [2, 4, 5, 6]
    assert rejects["reject_reason"].tolist() == [
        "malformed_json",
        "timestamp.str_matches",
        "session_duration.greater_than_or_equal_to",
        "malformed_json",
    ]
    assert [list(r) for r in rejects["failed_rules"]][1] == ["timestamp.str_matches"]
    assert set(rejects["run_id"]) == {results[0].run_id}
    assert set(rejects["source_file"]) == {str(folder / "part-1.jsonl")}
    assert rejects["raw_line"].iloc[0] == lines[1]
    events = read_table(tmp_path / "w", "events")
    row = events.iloc[0]
    assert events["event_id"].tolist() == ["g1"]
    assert (row["line_number"], row["day_of_week"], bool(row["is_weekend"])) == (1, 5, True)  # a Saturday
    assert pd.Timestamp(row["event_hour"]) == pd.Timestamp("2024-01-06T10:00:00Z")
    # 4 of 5 lines rejected: the blocking reject-rate check fails and hourly metrics are not built.
    checks = {e.check_name: e for e in results[0].get_asset_check_evaluations()}
    check = checks["events_reject_rate"]
    assert not check.passed and check.partition == "b1"
    assert check.metadata["rows_rejected"].value == 4
    # Five non-blank lines in = one loaded + four rejected.
    assert checks["events_nothing_lost"].passed
    assert checks["events_nothing_lost"].metadata["rows_in"].value == 5
    materialized = {e.asset_key.to_user_string() for e in results[0].get_asset_materialization_events()}
    assert "events" in materialized and "hourly_user_metrics" not in materialized
    assert not (tmp_path / "w" / "hourly_user_metrics").exists()


def test_a_multi_batch_run_accounts_for_every_line_of_each_batch(landing_copy, tmp_path):
    batches = batches_of(landing_copy)[:3]
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("event_batches", batches)
    result = dg.materialize(
        [definitions.events_and_rejects, events_reject_rate, events_nothing_lost],
        resources={
            "ray_cluster": RayResource(),
            "sources": SourcesResource(crm_url="sqlite:///unused.db", data_dir=str(landing_copy)),
            "warehouse": WarehouseResource(root=str(tmp_path / "w")),
        },
        instance=instance,
        tags={
            "dagster/asset_partition_range_start": batches[0],
            "dagster/asset_partition_range_end": batches[-1],
        },
    )
    lost = {
        e.partition: e for e in result.get_asset_check_evaluations() if e.check_name == "events_nothing_lost"
    }
    assert set(lost) == set(batches)
    assert all(e.passed for e in lost.values()), {p: e.metadata for p, e in lost.items()}
    # The batches re-deliver events of earlier ones: some lines are accounted for as duplicates.
    assert sum(e.metadata["duplicates"].value for e in lost.values()) > 0
    landing = landing_copy / "sources" / "landing" / "events"
    lines = sum(
        1
        for b in batches
        for f in (landing / b).glob("*.jsonl")
        for line in f.read_text().splitlines()
        if line.strip()
    )
    assert sum(e.metadata["rows_in"].value for e in lost.values()) == lines
    # Each batch's materializations carry that batch's own counts, not the run's.
    events, rejects = read_table(tmp_path / "w", "events"), read_table(tmp_path / "w", "events_rejects")
    reported = {
        (m.asset_key.to_user_string(), m.partition): m.metadata
        for m in result.asset_materializations_for_node("events_and_rejects")
    }
    for b in batches:
        own = reported[("events", b)]
        batch_lines = sum(
            1 for f in (landing / b).glob("*.jsonl") for line in f.read_text().splitlines() if line.strip()
        )
        assert own["lines_in"].value == batch_lines
        assert (
            own["rows_loaded"].value
            == own["dagster/partition_row_count"].value
            == (events["batch_id"] == b).sum()
        )
        assert own["rows_rejected"].value == (rejects["batch_id"] == b).sum()
        assert (
            reported[("events_rejects", b)]["dagster/partition_row_count"].value == own["rows_rejected"].value
        )


def test_batch_checks_judge_each_batch_in_ray_or_the_driver_and_keys_across_batches(
    landing_copy, tmp_path, checks_path
):
    batches = batches_of(landing_copy)[:2]
    instance = dg.DagsterInstance.ephemeral()
    load(landing_copy, tmp_path / "w", batches, instance)
    events_path, hourly_path = str(tmp_path / "w" / "events"), str(tmp_path / "w" / "hourly_user_metrics")
    events = DeltaTable(events_path).to_pyarrow_table()
    first, second = (events.filter(pc.equal(events.column("batch_id"), b)) for b in batches)
    # An event of the first batch stored again in the second; two of the second's with a negative
    # duration; an hourly row stored twice.
    batch = events.schema.get_field_index("batch_id")
    copied = first.take([0]).set_column(batch, events.schema.field(batch), pa.array([batches[1]]))
    durations = second.column("session_duration").to_pylist()
    durations[:2] = [-1.0, -2.0]
    duration = events.schema.get_field_index("session_duration")
    second = second.set_column(duration, events.schema.field(duration), pa.array(durations, pa.float64()))
    stored = pa.concat_tables([first, second, copied])
    write_deltalake(events_path, stored, mode="overwrite", partition_by=["batch_id"])
    hourly = DeltaTable(hourly_path).to_pyarrow_table()
    write_deltalake(hourly_path, pa.concat_tables([hourly, hourly.take([0])]), mode="overwrite")

    def run_checks(names: list[str], batch_id: str) -> dict:
        """The named checks alone in a batch's run, as the UI's "Execute check" runs them."""
        checks = list({id(c): c for c in map(check_named, names)}.values())
        defs = dg.Definitions(
            assets=EVENT_ASSETS, asset_checks=checks, resources=resources_for(landing_copy, tmp_path / "w")
        )
        result = checks_alone(defs.resolve_implicit_global_asset_job_def(), names).execute_in_process(
            partition_key=batch_id, instance=instance, raise_on_error=False
        )
        return {(e.check_name, e.partition): e for e in result.get_asset_check_evaluations()}

    found = run_checks(["events_contract_rules"], batches[0])
    found |= run_checks(
        ["events_contract_rules", "events_key_unique", "hourly_user_metrics_key_unique"], batches[1]
    )
    clean, broken = found[("events_contract_rules", batches[0])], found[("events_contract_rules", batches[1])]
    assert clean.passed and clean.metadata["rows_checked"].value == first.num_rows
    assert not broken.passed and broken.metadata["rows_checked"].value == second.num_rows + 1
    assert broken.metadata["rule_failures"].value == {"session_duration.greater_than_or_equal_to": 2}
    samples = broken.metadata["failing_row_samples"].value["session_duration.greater_than_or_equal_to"]
    assert sorted(row["session_duration"] for row in samples) == [-2.0, -1.0]

    ids = pd.Series(stored.column("event_id").to_pylist()).value_counts()
    repeated = ids[ids > 1]
    keys = found[("events_key_unique", None)]
    assert not keys.passed and keys.metadata["duplicate_keys"].value == len(repeated) == 1
    assert keys.metadata["sample"].value == [{"event_id": repeated.index[0], "count_all": 2}]
    hourly_keys = found[("hourly_user_metrics_key_unique", None)]
    twice = hourly.take([0]).select(["event_hour", "user_id"]).to_pylist()[0]
    assert not hourly_keys.passed and hourly_keys.metadata["duplicate_keys"].value == 1
    assert hourly_keys.metadata["sample"].value == [
        {"event_hour": twice["event_hour"].isoformat(), "user_id": twice["user_id"], "count_all": 2}
    ]
