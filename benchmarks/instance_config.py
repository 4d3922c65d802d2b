"""The ``dagster.yaml`` a benchmark's own ``DAGSTER_HOME`` gets: the repository's, or the same
with Dagster's consolidated SQLite event log (one WAL-mode file instead of a file per run plus an
index file that repeats every asset event), which ``fixed_cost`` and ``floors`` measure beside it."""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
EVENT_LOGS = ("sharded", "consolidated")


def write_instance_yaml(home: Path, event_log: str = "sharded", extra: dict | None = None) -> Path:
    """Write ``home/dagster.yaml``: the repository's settings, ``extra`` on top, and with
    ``event_log="consolidated"`` Dagster's ``ConsolidatedSqliteEventLogStorage`` under
    ``home/history`` (runs and schedules stay where Dagster's default SQLite puts them)."""
    if event_log not in EVENT_LOGS:
        raise ValueError(f"event_log={event_log!r} is not one of {EVENT_LOGS}")
    if event_log == "consolidated" and "storage" in (extra or {}):
        # Dagster ignores ``storage`` once ``event_log_storage`` is set: it would run on SQLite.
        raise ValueError("the consolidated event log is SQLite's: it cannot go with another storage")
    config = yaml.safe_load((REPO / "dagster.yaml").read_text())
    config.update(extra or {})
    if event_log == "consolidated":
        config["event_log_storage"] = {
            "module": "dagster._core.storage.event_log",
            "class": "ConsolidatedSqliteEventLogStorage",
            "config": {"base_dir": str(home / "history")},
        }
    home.mkdir(parents=True, exist_ok=True)
    path = home / "dagster.yaml"
    path.write_text(yaml.safe_dump(config))
    return path
