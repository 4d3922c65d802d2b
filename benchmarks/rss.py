"""Peak resident memory of a process and all its descendants (Ray's raylet, workers, object store).

Two sums are sampled: RSS, which counts a page shared by several processes (a shared library, the
object store's shared memory) once in each of them, so the sum overstates; and PSS, which splits
each shared page among the processes sharing it, so the sum is the memory the tree really holds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

import psutil


def _name(proc: psutil.Process) -> str:
    with suppress(psutil.Error):
        title = " ".join(proc.cmdline()[:1]) or proc.name()
        return title.rsplit("/", 1)[-1][:40]
    return "?"


def tree_memory(root: psutil.Process, with_pss: bool = True) -> tuple[int, int, dict[str, int]]:
    """Summed RSS and PSS of ``root`` and its descendants, and RSS per process name."""
    rss = pss = 0
    per_name: dict[str, int] = {}
    for proc in [root, *root.children(recursive=True)]:
        with suppress(psutil.Error):
            if with_pss:
                info = proc.memory_full_info()
                pss += info.pss
            else:
                info = proc.memory_info()
            rss += info.rss
            per_name[_name(proc)] = per_name.get(_name(proc), 0) + info.rss
    return rss, pss, per_name


@dataclass
class Peak:
    bytes: int = 0
    pss_bytes: int = 0
    # RSS per process name at the moment of the RSS peak.
    breakdown: dict[str, int] = field(default_factory=dict)

    @property
    def mib(self) -> float:
        return round(self.bytes / 2**20, 1)

    @property
    def pss_mib(self) -> float:
        return round(self.pss_bytes / 2**20, 1)

    def breakdown_mib(self) -> dict[str, float]:
        return {k: round(v / 2**20, 1) for k, v in sorted(self.breakdown.items(), key=lambda kv: -kv[1])}


@contextmanager
def peak_rss(interval: float = 0.05, with_pss: bool = False) -> Iterator[Peak]:
    """Sample the whole process tree every ``interval`` seconds while the block runs."""
    root = psutil.Process()
    peak = Peak()

    def sample() -> None:
        rss, pss, per_name = tree_memory(root, with_pss)
        if rss > peak.bytes:
            peak.bytes, peak.breakdown = rss, per_name
        peak.pss_bytes = max(peak.pss_bytes, pss)

    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            sample()
            time.sleep(interval)

    sample()
    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join()
        sample()
