"""Peak resident memory of a process and all its descendants (Ray's raylet, workers, object store)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass

import psutil


def tree_rss(root: psutil.Process) -> int:
    total = 0
    for proc in [root, *root.children(recursive=True)]:
        with suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += proc.memory_info().rss
    return total


@dataclass
class Peak:
    bytes: int = 0

    @property
    def mib(self) -> float:
        return round(self.bytes / 2**20, 1)


@contextmanager
def peak_rss(interval: float = 0.05) -> Iterator[Peak]:
    """Sample the whole process tree every ``interval`` seconds while the block runs."""
    root = psutil.Process()
    peak = Peak(tree_rss(root))
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak.bytes = max(peak.bytes, tree_rss(root))
            time.sleep(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield peak
    finally:
        stop.set()
        thread.join()
        peak.bytes = max(peak.bytes, tree_rss(root))
