"""Plot rows/s against size for each engine, from the latest results.

    python -m benchmarks.plot

Reads ``results/daily_chain.json`` (every engine at 1M and 10M orders) and, when present,
``results/memory.json`` (etl_assets up to 100M under a capped object store); writes
``results/rows_per_second.png``.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def series() -> dict[str, list[tuple[int, float]]]:
    lines: dict[str, list[tuple[int, float]]] = {}
    chain = json.loads((RESULTS / "daily_chain.json").read_text())
    for size in chain["sizes"]:
        for engine, figures in size["engines"].items():
            lines.setdefault(engine, []).append((size["lake_rows"], figures["rows_per_second"]))
    memory = RESULTS / "memory.json"
    if memory.exists():
        capped = json.loads(memory.read_text())
        spill = capped.get("spill_workers")
        label = f"etl_assets, object store capped at {capped['object_store_mb']} MiB" + (
            f", {spill} spill worker{'s' if spill > 1 else ''}" if spill else ""
        )
        # Since 2026-11-22 the memory benchmark runs the day's checks in the chain's run.
        label += (", with its checks" if capped.get("checks") else "") + " (one run per size)"
        lines[label] = [(s["lake_rows"], s["rows_per_second"]) for s in capped["sizes"]]
    return lines


def main() -> None:
    figure, axis = plt.subplots(figsize=(7, 5.5))
    for engine, points in series().items():
        points.sort()
        axis.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=engine)
    machine = json.loads((RESULTS / "daily_chain.json").read_text())["machine"]
    axis.set_xscale("log")
    axis.set_xlabel("lake rows in the day")
    axis.set_ylabel("rows per second (whole chain, writes included)")
    axis.set_title(f"orders -> customer_orders -> daily_customer_metrics, {machine['cpus']} cores")
    axis.grid(True, which="both", alpha=0.3)
    # Below the axes: inside them, the legend hid the fastest engine's line.
    axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), fontsize="small")
    figure.tight_layout()
    figure.savefig(RESULTS / "rows_per_second.png", dpi=120)
    print(RESULTS / "rows_per_second.png")


if __name__ == "__main__":
    main()
