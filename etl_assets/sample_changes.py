"""New source data arriving after the sample, for watching the incremental loads work.

python -m etl_assets.sample_changes crm --crm-url sqlite:///data/sources/crm.db [--seed 1]
    applies one round of CRM changes: pending transactions completed, completed ones
    refunded (negative amount), new transactions inserted; each with a newer updated_at.
python -m etl_assets.sample_changes events --landing data/sources/landing/events [--seed 1]
    drops a new batch into the landing zone (with a few re-delivered events and one
    malformed line), written under a hidden name and renamed so the sensor never sees half a batch.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from etl_assets.sample_data import EVENT_TYPES, connect_for_writing

UPDATE_RATE = 0.05
REFUND_RATE = 0.02
INSERT_RATE = 0.02


@dataclass(frozen=True)
class CrmChanges:
    completed: int
    refunded: int
    inserted: int
    updated_at_from: str


def apply_crm_changes(crm_url: str, seed: int = 1) -> CrmChanges:
    """One round of changes; every changed row gets an ``updated_at`` after all existing ones."""
    rng = np.random.default_rng(seed)
    conn, p = connect_for_writing(crm_url)
    try:
        cur = conn.cursor()
        cur.execute("SELECT MAX(transaction_id), MAX(updated_at), COUNT(*) FROM transactions")
        max_id, max_updated, total = cur.fetchone()
        newest = (
            max_updated if isinstance(max_updated, datetime) else datetime.fromisoformat(str(max_updated))
        )
        start = newest + timedelta(minutes=10)
        stamp = iter(start + timedelta(microseconds=i) for i in range(10**7))

        def fmt(ts: datetime) -> str:
            return ts.strftime("%Y-%m-%d %H:%M:%S.%f")

        def pick(status: str, rate: float) -> list[int]:
            cur.execute(
                f"SELECT transaction_id FROM transactions WHERE status = {p} ORDER BY transaction_id",
                (status,),
            )
            ids = [r[0] for r in cur.fetchall()]
            k = min(len(ids), max(1, int(total * rate)))
            return sorted(int(i) for i in rng.choice(ids, size=k, replace=False)) if ids else []

        completed, refunded = pick("pending", UPDATE_RATE), pick("completed", REFUND_RATE)
        cur.executemany(
            f"UPDATE transactions SET status = 'completed', updated_at = {p} WHERE transaction_id = {p}",
            [(fmt(next(stamp)), i) for i in completed],
        )
        cur.executemany(
            f"UPDATE transactions SET status = 'refunded', amount = -ABS(amount), updated_at = {p}"
            f" WHERE transaction_id = {p}",
            [(fmt(next(stamp)), i) for i in refunded],
        )
        cur.execute("SELECT DISTINCT customer_id FROM transactions ORDER BY customer_id")
        customers = [r[0] for r in cur.fetchall()]
        inserts = max(1, int(total * INSERT_RATE))
        rows = []
        for n in range(inserts):
            ts = next(stamp)
            rows.append(
                (
                    int(max_id) + 1 + n,
                    int(rng.choice(customers)),
                    f"{rng.uniform(5, 500):.2f}",
                    str(rng.choice(["USD", "EUR", "GBP"])),
                    ts.date().isoformat(),
                    "pending",
                    fmt(ts),
                )
            )
        cur.executemany(f"INSERT INTO transactions VALUES ({', '.join([p] * 7)})", rows)
        conn.commit()
    finally:
        conn.close()
    return CrmChanges(len(completed), len(refunded), inserts, fmt(start))


def drop_event_batch(landing: Path, seed: int = 1, events: int = 200, batch_id: str | None = None) -> Path:
    """Write a new landing batch atomically (hidden folder, then rename) and return its folder."""
    rng = np.random.default_rng(seed)
    batch_id = batch_id or datetime.now(UTC).strftime("manual-%Y%m%dT%H%M%S")
    now = datetime.now(UTC).replace(microsecond=0, tzinfo=None)
    lines = [
        json.dumps(
            {
                "event_id": f"{batch_id}-{i}",
                "user_id": int(rng.integers(1, 200)),
                "event_type": str(rng.choice(EVENT_TYPES)),
                "timestamp": (now - timedelta(seconds=int(rng.integers(0, 7200)))).isoformat() + "Z",
                "session_duration": round(float(rng.exponential(90.0)), 1),
            }
        )
        for i in range(events)
    ]
    earlier = sorted(p for p in landing.glob("*/*.jsonl") if not p.parent.name.startswith((".", "_")))
    if earlier:
        lines += earlier[-1].read_text().splitlines()[:3]  # re-delivered events
    lines.append('{"event_id": "broken", "user_id": ')  # a malformed line
    hidden = landing / f".incoming-{batch_id}"
    hidden.mkdir(parents=True, exist_ok=False)
    (hidden / "events.jsonl").write_text("\n".join(lines) + "\n")
    final = landing / batch_id
    hidden.rename(final)
    return final


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m etl_assets.sample_changes", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    crm = commands.add_parser("crm", help="apply a round of CRM transaction changes")
    crm.add_argument("--crm-url", required=True)
    crm.add_argument("--seed", type=int, default=1)
    events = commands.add_parser("events", help="drop a new event batch into the landing zone")
    events.add_argument("--landing", type=Path, required=True)
    events.add_argument("--seed", type=int, default=1)
    events.add_argument("--events", type=int, default=200)
    events.add_argument("--batch-id", default=None)
    args = parser.parse_args(argv)
    if args.command == "crm":
        print(apply_crm_changes(args.crm_url, args.seed))
    else:
        print(f"new batch at {drop_event_batch(args.landing, args.seed, args.events, args.batch_id)}")


if __name__ == "__main__":
    main()
