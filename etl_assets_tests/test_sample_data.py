"""The generator: deterministic, and every kind of bad row present."""

import hashlib
import sqlite3
from datetime import date
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from etl_assets.sample_data import ORPHAN_CUSTOMER_ID_BASE, SampleSpec, generate


def digest(root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix != ".db"):
        h.update(path.relative_to(root).as_posix().encode())
        h.update(path.read_bytes())
    with sqlite3.connect(root / "crm.db") as conn:
        for line in conn.iterdump():
            h.update(line.encode())
    return h.hexdigest()


def test_same_arguments_same_data_and_another_seed_other_data(tmp_path):
    spec = dict(start=date(2024, 1, 1), days=2, orders_per_day=500, customers=80)
    generate(SampleSpec(out=tmp_path / "a", seed=3, **spec))
    generate(SampleSpec(out=tmp_path / "b", seed=3, **spec))
    generate(SampleSpec(out=tmp_path / "c", seed=4, **spec))
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert digest(tmp_path / "a") != digest(tmp_path / "c")


def test_sample_holds_every_kind_of_bad_row(sample_dir):
    lake = pq.read_table(sample_dir / "sources" / "lake" / "orders")
    assert lake.column("order_id").null_count > 0
    assert lake.column("customer_id").null_count > 0
    assert pc.sum(pc.less_equal(lake.column("order_amount"), 0)).as_py() > 0
    assert pc.sum(pc.greater_equal(lake.column("customer_id"), ORPHAN_CUSTOMER_ID_BASE)).as_py() > 0
    # Exact duplicates: fewer distinct rows than rows.
    assert lake.group_by(lake.column_names).aggregate([]).num_rows < lake.num_rows
    with sqlite3.connect(sample_dir / "sources" / "crm.db") as conn:
        rows, distinct = conn.execute(
            "SELECT count(*), (SELECT count(*) FROM (SELECT DISTINCT * FROM customers)) FROM customers"
        ).fetchone()
        multi_version = conn.execute(
            "SELECT count(*) FROM (SELECT customer_id FROM customers GROUP BY customer_id"
            " HAVING count(DISTINCT updated_at) > 1)"
        ).fetchone()[0]
        mid_day = conn.execute(
            "SELECT count(*) FROM customers WHERE substr(updated_at, 12, 2) BETWEEN '06' AND '18'"
        ).fetchone()[0]
    assert distinct < rows
    assert multi_version > 0
    assert mid_day > 0
    landing = list((sample_dir / "sources" / "landing" / "events").glob("*/*.jsonl"))
    assert len(landing) == 2 * 7
