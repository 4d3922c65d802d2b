"""The daily chain in DuckDB SQL (the tests' independent computation), writing Parquet."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from etl_assets_tests import expected


def run(sample_root: Path, day: date, out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    con = expected.connect(sample_root)
    for table in expected.DAILY_TABLES:
        con.execute(f"COPY (SELECT * FROM {table}) TO '{out / table}.parquet' (FORMAT parquet)")
    return con.execute("SELECT count(*) FROM lake").fetchone()[0]
