"""Generated sample data for the benchmarks, cached under ``benchmarks/work/`` by size."""

from __future__ import annotations

import json
import shutil
from datetime import date
from pathlib import Path

from etl_assets.sample_data import SampleSpec, generate

HERE = Path(__file__).resolve().parent
DAY = date(2024, 1, 1)


def sample(root: Path, orders: int, customers: int, days: int = 1, events_per_batch: int = 10) -> Path:
    """``days`` lake days of ``orders`` orders each from ``DAY`` on, a CRM of ``customers``
    customers and two event batches a day, generated once per set of arguments."""
    marker = root / "sources" / "spec.json"
    spec = {"orders": orders, "customers": customers, "days": days, "seed": 1}
    if events_per_batch != 10:  # samples cached before the argument keep their marker
        spec["events_per_batch"] = events_per_batch
    if not (marker.exists() and json.loads(marker.read_text()) == spec):
        shutil.rmtree(root, ignore_errors=True)
        generate(
            SampleSpec(
                out=root / "sources",
                start=DAY,
                days=days,
                orders_per_day=orders,
                customers=customers,
                seed=1,
                events_per_batch=events_per_batch,
            )
        )
        marker.write_text(json.dumps(spec))
    return root
