"""End to end through the Dagster CLI, as the README tells a user to run it."""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import psutil
from deltalake import DeltaTable

REPO = Path(__file__).resolve().parents[1]
DAGSTER = str(Path(sys.executable).parent / "dagster")
SELECT = "raw_customers,customers,orders,orders_rejects,customer_orders,daily_customer_metrics"


def cli(args: list[str], data_dir: Path, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "ETL_DATA_DIR": str(data_dir), "DAGSTER_HOME": str(home)}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run(
        [DAGSTER, "asset", "materialize", "-m", "etl_assets.definitions", "--select", SELECT, *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def processes_of(session: str) -> list[str]:
    """Live processes of the Ray session ``session`` (its name is in their command lines)."""
    found = []
    for process in psutil.process_iter(["cmdline", "status"]):
        words = " ".join(process.info["cmdline"] or [])
        if session in words and process.info["status"] != psutil.STATUS_ZOMBIE:
            found.append(words[:200])
    return found


def days_in(table: Path, column: str) -> dict[str, int]:
    data = DeltaTable(str(table)).to_pyarrow_table().column(column).to_pylist()
    counts: dict[str, int] = {}
    for value in data:
        counts[value.isoformat()] = counts.get(value.isoformat(), 0) + 1
    return counts


def test_cli_materializes_a_partition_then_a_range(sample_dir, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text())
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "sources").symlink_to(sample_dir / "sources")

    single = cli(["--partition", "2024-01-03"], data_dir, home)
    assert single.returncode == 0, single.stderr[-3000:]
    # The run's private Ray is gone with it: no raylet, GCS, monitor, log monitor or agent of its
    # session is left (their command lines name the session; workers rename themselves ray::...).
    found = re.search(r"(session_[0-9_-]+)", single.stderr)
    assert found, "the run's log names no Ray session: " + single.stderr[-2000:]
    session = found.group(1)
    deadline = time.monotonic() + 15
    while processes_of(session) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert processes_of(session) == []
    metrics = data_dir / "warehouse" / "daily_customer_metrics"
    assert set(days_in(metrics, "metric_date")) == {"2024-01-03"}

    ranged = cli(["--partition-range", "2024-01-01...2024-01-04"], data_dir, home)
    assert ranged.returncode == 0, ranged.stderr[-3000:]
    orders_days = days_in(data_dir / "warehouse" / "orders", "order_date")
    assert set(orders_days) == {"2024-01-01", "2024-01-02", "2024-01-03", "2024-01-04"}
    assert set(days_in(metrics, "metric_date")) == set(orders_days)
