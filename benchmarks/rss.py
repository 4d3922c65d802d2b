"""Peak resident memory of a process and all its descendants (Ray's raylet, workers, object store).

Two sums are sampled: RSS, which counts a page shared by several processes (a shared library, the
object store's shared memory) once in each of them, so the sum overstates; and PSS, which splits
each shared page among the processes sharing it, so the sum is the memory the tree really holds.

The sampling runs in a process of its own (``python -m benchmarks.rss PID``): a thread in the
measured process would take that process's GIL every 50 ms to walk twenty-odd Ray processes,
which slowed a Ray driver's run by several percent and a single-process peer's hardly at all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

import psutil


def process_name(proc: psutil.Process) -> str:
    with suppress(psutil.Error):
        title = " ".join(proc.cmdline()[:1]) or proc.name()
        return title.rsplit("/", 1)[-1][:40]
    return "?"


def rss_and_count_by_name(per_pid: dict[int, int]) -> tuple[dict[str, int], dict[str, int]]:
    """RSS per pid summed per process name, and how many processes have each name (processes gone
    since are left out): several idle workers share one name."""
    names: dict[str, int] = {}
    counts: dict[str, int] = {}
    for pid, size in per_pid.items():
        with suppress(psutil.Error):
            name = process_name(psutil.Process(pid))
            names[name] = names.get(name, 0) + size
            counts[name] = counts.get(name, 0) + 1
    return names, counts


def tree_memory(
    root: psutil.Process, with_pss: bool = True, skip: int | None = None
) -> tuple[int, int, dict[int, int]]:
    """Summed RSS and PSS of ``root`` and its descendants (but ``skip``), and RSS per pid."""
    rss = pss = 0
    per_pid: dict[int, int] = {}
    for proc in [root, *root.children(recursive=True)]:
        if proc.pid == skip:
            continue
        with suppress(psutil.Error):
            if with_pss:
                info = proc.memory_full_info()
                pss += info.pss
            else:
                info = proc.memory_info()
            rss += info.rss
            per_pid[proc.pid] = info.rss
    return rss, pss, per_pid


@dataclass
class Peak:
    bytes: int = 0
    pss_bytes: int = 0
    # RSS per process name at the moment of the RSS peak, and the number of processes of each name.
    breakdown: dict[str, int] = field(default_factory=dict)
    processes: dict[str, int] = field(default_factory=dict)
    # When the RSS peak was sampled (Unix time): which step of a run held it.
    at: float = 0.0

    @property
    def mib(self) -> float:
        return round(self.bytes / 2**20, 1)

    @property
    def pss_mib(self) -> float:
        return round(self.pss_bytes / 2**20, 1)

    def breakdown_mib(self) -> dict[str, float]:
        return {k: round(v / 2**20, 1) for k, v in sorted(self.breakdown.items(), key=lambda kv: -kv[1])}


def sample_until_stopped(
    pid: int, interval: float, with_pss: bool, stop: threading.Event, started: threading.Event
) -> Peak:
    """The peak over ``pid``'s tree (this process left out), sampled until ``stop`` is set;
    ``started`` is set once the first sample is in."""
    root, me = psutil.Process(pid), os.getpid()
    peak = Peak()
    while True:
        stopping = stop.is_set()  # one last sample after the stop
        rss, pss, per_pid = tree_memory(root, with_pss, skip=me)
        if rss > peak.bytes:
            # Names only for a new peak: reading every command line each time cost more than the rest.
            peak.bytes = rss
            peak.breakdown, peak.processes = rss_and_count_by_name(per_pid)
            peak.at = time.time()
        peak.pss_bytes = max(peak.pss_bytes, pss)
        started.set()
        if stopping:
            return peak
        stop.wait(interval)


@contextmanager
def peak_rss(interval: float = 0.05, with_pss: bool = False) -> Iterator[Peak]:
    """Sample this process's whole tree every ``interval`` seconds while the block runs, from a
    separate sampling process; the ``Peak`` is filled in when the block ends. Start any timer
    inside the block: the sampler's own start-up (about 0.1 s) comes before it."""
    sampler = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.rss", str(os.getpid()), str(interval), str(int(with_pss))],
        cwd=Path(__file__).resolve().parent.parent,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    if sampler.stdout.readline().strip() != "ready":  # the first sample is taken
        sampler.kill()
        raise RuntimeError(f"the memory sampler did not start: {sampler.communicate()[1][-2000:]}")
    peak = Peak()
    try:
        yield peak
    except BaseException:
        sampler.kill()
        sampler.communicate()
        raise
    try:
        out, err = sampler.communicate("", timeout=60)
    except subprocess.TimeoutExpired:
        sampler.kill()
        sampler.communicate()
        raise RuntimeError("the memory sampler did not report within 60 s") from None
    if sampler.returncode:
        raise RuntimeError(f"the memory sampler failed: {err[-2000:]}")
    found = json.loads(out)
    peak.bytes, peak.pss_bytes = found["bytes"], found["pss_bytes"]
    peak.breakdown, peak.processes = found["breakdown"], found["processes"]
    peak.at = found["at"]


def main() -> None:
    pid, interval, with_pss = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3] == "1"
    stop, started = threading.Event(), threading.Event()
    outcome: list = []

    def run() -> None:
        try:
            outcome.append(sample_until_stopped(pid, interval, with_pss, stop, started))
        except BaseException as exc:  # reported below, on the parent's pipe
            outcome.append(exc)
        finally:
            started.set()

    thread = threading.Thread(target=run)
    thread.start()
    started.wait()
    if outcome:  # failed before its first sample
        raise outcome[0]
    print("ready", flush=True)
    sys.stdin.read()  # until the measured block ends and the parent closes our stdin
    stop.set()
    thread.join()
    if isinstance(outcome[0], BaseException):
        raise outcome[0]
    print(json.dumps(vars(outcome[0])), flush=True)


if __name__ == "__main__":
    main()
