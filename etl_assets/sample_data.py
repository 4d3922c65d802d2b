"""Deterministic generator of the embedded sample sources (DESIGN.md, "Sources").

    python -m etl_assets.sample_data --out DIR --start 2024-01-01 --days 14 \
        --orders-per-day 5000 --customers 2000 --seed 7

writes, under ``DIR``:

* ``crm.db`` (or the database at ``--crm-url``, e.g. PostgreSQL): the CRM with ``customers``
  (several versions per customer, some of them taking
  effect mid-day, exact duplicate rows, untidy emails and phones) and ``transactions``;
* ``lake/orders/date=YYYY-MM-DD/part-0000N.parquet``: orders delivered at least once, with null ids,
  non-positive amounts, timestamps outside the folder's day and orders of unknown customers;
* ``landing/events/<batch_id>/events.jsonl``: event batches with re-delivered events and malformed lines.

The same arguments always give the same data: one seeded ``numpy`` generator drives every choice.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

US_PER_DAY = 86_400_000_000
ORPHAN_CUSTOMER_ID_BASE = 900_000_000

SEGMENTS = np.array(["consumer", "small_business", "enterprise"])
COUNTRIES = np.array(["US", "DE", "FR", "GB", "JP", "BR", "IN", "CA"])
CHANNELS = np.array(["web", "mobile", "store", "partner"])
EVENT_TYPES = np.array(["page_view", "click", "add_to_cart", "checkout", "search"])
FIRST_NAMES = np.array(["Ada", "Grace", "Alan", "Edsger", "Barbara", "Donald", "Frances", "Ken"])
LAST_NAMES = np.array(["Lovelace", "Hopper", "Turing", "Dijkstra", "Liskov", "Knuth", "Allen"])

ORDERS_SCHEMA = pa.schema(
    [
        ("order_id", pa.int64()),
        ("customer_id", pa.int64()),
        ("order_ts", pa.timestamp("us", tz="UTC")),
        ("order_amount", pa.float64()),
        ("quantity", pa.int32()),
        ("channel", pa.string()),
    ]
)

# Rates of each kind of bad row, per generated row.
NULL_ORDER_ID_RATE = 0.003
NULL_CUSTOMER_ID_RATE = 0.003
NON_POSITIVE_AMOUNT_RATE = 0.003
OUTSIDE_DAY_RATE = 0.002
ORPHAN_RATE = 0.002
ORDER_DUPLICATE_RATE = 0.01
CUSTOMER_DUPLICATE_RATE = 0.02
EVENT_REDELIVERY_RATE = 0.03
EVENT_MALFORMED_RATE = 0.005


@dataclass(frozen=True)
class SampleSpec:
    out: Path
    start: date
    days: int
    orders_per_day: int
    customers: int
    seed: int
    events_per_batch: int | None = None
    crm_url: str | None = None


def _epoch_us(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) * 1_000_000


def _format_ts(us: np.ndarray) -> list[str]:
    """Timestamps as the CRM stores them: 'YYYY-MM-DD HH:MM:SS.ffffff', UTC, fixed width."""
    text = np.datetime_as_string(us.astype("datetime64[us]"), unit="us")
    return np.char.replace(text, "T", " ").tolist()


def generate_customers(rng: np.random.Generator, spec: SampleSpec) -> dict[str, np.ndarray]:
    """Customer versions: 80% of customers exist from the first minutes, the rest sign up later."""
    n = spec.customers
    start_us = _epoch_us(spec.start)
    end_us = start_us + spec.days * US_PER_DAY
    ids = np.arange(1, n + 1, dtype=np.int64)
    early = rng.random(n) < 0.8
    created = np.where(
        early,
        start_us + rng.integers(0, 600_000_000, n),
        start_us + rng.integers(0, spec.days * US_PER_DAY, n),
    )
    extra = np.minimum(rng.poisson(0.8, n), 4)
    version_owner = np.repeat(np.arange(n), 1 + extra)
    is_first = np.ones(len(version_owner), dtype=bool)
    is_first[1:] = version_owner[1:] != version_owner[:-1]
    # A later version takes effect some time after the customer was created, often mid-day.
    born = created[version_owner]
    later = born + 1 + (rng.random(len(version_owner)) * (end_us - 1 - born)).astype(np.int64)
    updated = np.where(is_first, born, later)

    first = FIRST_NAMES[rng.integers(0, len(FIRST_NAMES), n)][version_owner]
    last = LAST_NAMES[rng.integers(0, len(LAST_NAMES), n)][version_owner]
    domain = np.where(rng.random(len(version_owner)) < 0.7, "example.com", "mail.example.org")
    email = np.char.add(
        np.char.add(np.char.add(np.char.add(first, "."), last), ids[version_owner].astype(str)),
        np.char.add("@", domain),
    )
    shout = rng.random(len(email)) < 0.3
    email = np.where(shout, np.char.upper(email), email)
    pad = rng.random(len(email)) < 0.2
    email = np.where(pad, np.char.add(np.char.add("  ", email), " "), email)
    digits = rng.integers(200, 999, (len(email), 3))
    tail = rng.integers(1000, 9999, len(email))
    style = rng.integers(0, 3, len(email))
    a, b, c = digits[:, 0].astype(str), digits[:, 1].astype(str), tail.astype(str)
    phone = np.select(
        [style == 0, style == 1],
        [
            np.char.add(np.char.add(np.char.add("+1 (", a), np.char.add(") ", b)), np.char.add("-", c)),
            np.char.add(np.char.add(np.char.add(a, "."), np.char.add(b, ".")), c),
        ],
        np.char.add(np.char.add(a, b), c),
    )
    rows = {
        "customer_id": ids[version_owner],
        "name": np.char.add(np.char.add(first, " "), last),
        "email": email,
        "phone": phone,
        "customer_segment": SEGMENTS[rng.integers(0, len(SEGMENTS), len(email))],
        "country": COUNTRIES[rng.integers(0, len(COUNTRIES), len(email))],
        "created_at": created[version_owner],
        "updated_at": updated,
    }
    dup = np.flatnonzero(rng.random(len(email)) < CUSTOMER_DUPLICATE_RATE)
    order = np.concatenate([np.arange(len(email)), dup])
    order = order[np.argsort(rows["updated_at"][order], kind="stable")]
    return {k: v[order] for k, v in rows.items()}


def generate_orders_day(
    rng: np.random.Generator,
    day: date,
    count: int,
    first_order_id: int,
    customer_ids: np.ndarray,
    customer_created: np.ndarray,
) -> pa.Table:
    """One day of the orders lake, bad rows and exact duplicates included, in delivery order."""
    day_us = _epoch_us(day)
    ts = day_us + rng.integers(0, US_PER_DAY, count)
    # Customers are picked among those that exist when the order is placed.
    by_created = np.argsort(customer_created, kind="stable")
    eligible = np.searchsorted(customer_created[by_created], ts, side="right")
    pick = np.floor(rng.random(count) * np.maximum(eligible, 1)).astype(np.int64)
    customer = customer_ids[by_created][pick]
    customer = np.where(eligible == 0, ORPHAN_CUSTOMER_ID_BASE + rng.integers(0, 1000, count), customer)
    amount = np.round(np.exp(rng.normal(3.5, 0.8, count)), 2) + 0.01
    order_id = np.arange(first_order_id, first_order_id + count, dtype=np.int64)
    order_id_valid = np.ones(count, dtype=bool)
    customer_valid = np.ones(count, dtype=bool)

    # Each kind of bad row lands on its own rows, so the counts of the sample are exact.
    kinds = rng.random(count)
    edges = np.cumsum(
        [NULL_ORDER_ID_RATE, NULL_CUSTOMER_ID_RATE, NON_POSITIVE_AMOUNT_RATE, OUTSIDE_DAY_RATE, ORPHAN_RATE]
    )
    order_id_valid[kinds < edges[0]] = False
    customer_valid[(kinds >= edges[0]) & (kinds < edges[1])] = False
    bad_amount = (kinds >= edges[1]) & (kinds < edges[2])
    amount[bad_amount] = np.where(rng.random(bad_amount.sum()) < 0.5, 0.0, -amount[bad_amount])
    outside = (kinds >= edges[2]) & (kinds < edges[3])
    ts[outside] += np.where(rng.random(outside.sum()) < 0.5, -1, 1) * US_PER_DAY
    orphan = (kinds >= edges[3]) & (kinds < edges[4])
    customer[orphan] = ORPHAN_CUSTOMER_ID_BASE + rng.integers(1000, 2000, orphan.sum())

    table = pa.table(
        {
            "order_id": pa.array(order_id, mask=~order_id_valid),
            "customer_id": pa.array(customer, mask=~customer_valid),
            "order_ts": pa.array(ts.astype("datetime64[us]"), pa.timestamp("us", tz="UTC")),
            "order_amount": pa.array(amount),
            "quantity": pa.array(rng.integers(1, 6, count).astype(np.int32)),
            "channel": pa.array(CHANNELS[rng.integers(0, len(CHANNELS), count)]),
        },
        schema=ORDERS_SCHEMA,
    )
    duplicates = np.flatnonzero(rng.random(count) < ORDER_DUPLICATE_RATE)
    delivery = rng.permutation(np.concatenate([np.arange(count), duplicates]))
    return table.take(delivery)


def generate_events_batch(
    rng: np.random.Generator, window_start_us: int, count: int, customer_ids: np.ndarray, seq: int
) -> tuple[np.ndarray, list[str]]:
    """Events of one landing batch as JSON lines; returns their ids so later batches can repeat some."""
    ids = np.char.add(f"e{seq:05d}-", np.arange(count).astype(str))
    ts = window_start_us + rng.integers(-3_600_000_000, US_PER_DAY // 2, count)
    stamps = np.char.add(_format_ts(ts), "Z")
    stamps = np.char.replace(stamps, " ", "T")
    users = customer_ids[rng.integers(0, len(customer_ids), count)]
    types = EVENT_TYPES[rng.integers(0, len(EVENT_TYPES), count)]
    durations = np.round(rng.exponential(90.0, count), 1)
    lines = [
        json.dumps(
            {"event_id": e, "user_id": int(u), "event_type": t, "timestamp": s, "session_duration": float(d)}
        )
        for e, u, t, s, d in zip(ids.tolist(), users, types.tolist(), stamps.tolist(), durations)
    ]
    return ids, lines


CRM_DDL = (
    "CREATE TABLE customers (customer_id BIGINT, name TEXT, email TEXT, phone TEXT,"
    " customer_segment TEXT, country TEXT, created_at TIMESTAMP, updated_at TIMESTAMP)",
    "CREATE TABLE transactions (transaction_id BIGINT, customer_id BIGINT, amount NUMERIC(12,2),"
    " currency TEXT, transaction_date DATE, status TEXT, updated_at TIMESTAMP)",
    "CREATE INDEX customers_updated_at ON customers (updated_at)",
    "CREATE INDEX transactions_updated_at ON transactions (updated_at)",
)


def connect_for_writing(crm_url: str):
    """A DB-API connection and its placeholder, for ``sqlite:///path`` or ``postgresql://`` URLs."""
    if crm_url.startswith("sqlite:"):
        path = crm_url.removeprefix("sqlite:///").removeprefix("sqlite://")
        if crm_url.startswith("sqlite:////"):
            path = "/" + path.lstrip("/")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return sqlite3.connect(path), "?"
    import psycopg

    return psycopg.connect(crm_url), "%s"


def write_crm(crm_url: str, customers: dict[str, np.ndarray], transactions: dict[str, list]) -> None:
    """(Re)create the CRM tables at ``crm_url`` and fill them."""
    conn, p = connect_for_writing(crm_url)
    try:
        cursor = conn.cursor()
        for table in ("customers", "transactions"):
            cursor.execute(f"DROP TABLE IF EXISTS {table}")
        for statement in CRM_DDL:
            cursor.execute(statement)
        cursor.executemany(
            f"INSERT INTO customers VALUES ({', '.join([p] * 8)})",
            list(
                zip(
                    customers["customer_id"].tolist(),
                    customers["name"].tolist(),
                    customers["email"].tolist(),
                    customers["phone"].tolist(),
                    customers["customer_segment"].tolist(),
                    customers["country"].tolist(),
                    _format_ts(customers["created_at"]),
                    _format_ts(customers["updated_at"]),
                )
            ),
        )
        cursor.executemany(
            f"INSERT INTO transactions VALUES ({', '.join([p] * 7)})", list(zip(*transactions.values()))
        )
        conn.commit()
    finally:
        conn.close()


def generate_transactions(rng: np.random.Generator, spec: SampleSpec, customer_ids: np.ndarray) -> dict:
    n = max(1, spec.orders_per_day // 10) * spec.days
    start_us = _epoch_us(spec.start)
    when = start_us + rng.integers(0, spec.days * US_PER_DAY, n)
    status = np.array(["pending", "completed", "failed", "refunded"])[
        rng.choice(4, n, p=[0.15, 0.75, 0.05, 0.05])
    ]
    amount = np.round(np.exp(rng.normal(4.0, 0.9, n)), 2)
    amount = np.where(status == "refunded", -amount, amount)
    updated = when + rng.integers(0, 3 * 3_600_000_000, n)
    return {
        "transaction_id": np.arange(1, n + 1).tolist(),
        "customer_id": customer_ids[rng.integers(0, len(customer_ids), n)].tolist(),
        "amount": [f"{a:.2f}" for a in amount],
        "currency": np.array(["USD", "EUR", "GBP"])[rng.integers(0, 3, n)].tolist(),
        "transaction_date": np.datetime_as_string(when.astype("datetime64[us]"), unit="D").tolist(),
        "status": status.tolist(),
        "updated_at": _format_ts(updated),
    }


def generate(spec: SampleSpec) -> None:
    """Write all three sources under ``spec.out``, replacing earlier output of the generator."""
    rng = np.random.default_rng(spec.seed)
    spec.out.mkdir(parents=True, exist_ok=True)
    customers = generate_customers(rng, spec)
    first_versions = np.unique(customers["customer_id"], return_index=True)
    customer_ids, created = first_versions[0], customers["created_at"][first_versions[1]]
    crm_url = spec.crm_url or f"sqlite:///{(spec.out / 'crm.db').resolve()}"
    if crm_url.startswith("sqlite:"):
        (spec.out / "crm.db").unlink(missing_ok=True)
    write_crm(crm_url, customers, generate_transactions(rng, spec, customer_ids))

    lake = spec.out / "lake" / "orders"
    next_order_id = 1
    for offset in range(spec.days):
        day = spec.start + timedelta(days=offset)
        table = generate_orders_day(rng, day, spec.orders_per_day, next_order_id, customer_ids, created)
        next_order_id += spec.orders_per_day
        folder = lake / f"date={day.isoformat()}"
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob("*.parquet"):
            stale.unlink()
        half = table.num_rows // 2
        pq.write_table(table.slice(0, half), folder / "part-00000.parquet")
        pq.write_table(table.slice(half), folder / "part-00001.parquet")

    landing = spec.out / "landing" / "events"
    per_batch = spec.events_per_batch or max(1, min(spec.orders_per_day // 4, 20_000))
    previous_lines: list[str] = []
    seq = 0
    for offset in range(spec.days):
        for half_day in (0, 12):
            window = _epoch_us(spec.start + timedelta(days=offset)) + half_day * 3_600_000_000
            ids, lines = generate_events_batch(rng, window, per_batch, customer_ids, seq)
            if len(previous_lines):
                again = np.flatnonzero(rng.random(len(previous_lines)) < EVENT_REDELIVERY_RATE)
                lines += [previous_lines[i] for i in again]
            broken = np.flatnonzero(rng.random(len(lines)) < EVENT_MALFORMED_RATE)
            for i in broken:
                lines[i] = lines[i][: len(lines[i]) // 2]
            batch_id = f"{(spec.start + timedelta(days=offset)).isoformat()}T{half_day:02d}"
            folder = landing / batch_id
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "events.jsonl").write_text("\n".join(lines) + "\n")
            previous_lines, seq = lines, seq + 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m etl_assets.sample_data", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", type=Path, required=True, help="folder to write the sources into")
    parser.add_argument("--start", type=date.fromisoformat, default=date(2024, 1, 1))
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--orders-per-day", type=int, default=5000)
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--events-per-batch", type=int, default=None)
    parser.add_argument(
        "--crm-url", default=None, help="write the CRM tables here (postgresql://...) instead of DIR/crm.db"
    )
    args = parser.parse_args(argv)
    if args.days < 1 or args.orders_per_day < 1 or args.customers < 1:
        parser.error("--days, --orders-per-day and --customers must be at least 1")
    generate(SampleSpec(**vars(args)))
    print(f"sample written to {args.out}")


if __name__ == "__main__":
    main()
