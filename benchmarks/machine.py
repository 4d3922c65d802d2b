"""What a benchmark ran on, recorded with its figures."""

from __future__ import annotations

import os
import platform
from datetime import UTC, datetime
from importlib.metadata import version

import psutil


def machine() -> dict:
    return {
        "cpus": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {p: version(p) for p in ("ray", "dagster", "deltalake", "pyarrow", "duckdb", "pandas")},
        "date": datetime.now(UTC).date().isoformat(),
    }
