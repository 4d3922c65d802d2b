"""The dashboard agent's stand-in, run as a raylet runs it, under a stand-in for the raylet: it
writes the port files the raylet waits for, and leaves when its raylet is gone, however its stdin
is set."""

import os
import signal
import subprocess
import sys

import psutil
import pytest

from etl_assets import dashboard_agent_standin

# A raylet of our own: it starts the stand-in as the raylet does, says its pid, and waits.
RAYLET = """
import os, subprocess, sys, time
env = {**os.environ, "RAY_RAYLET_PID": str(os.getpid())}
if sys.argv[1] == "pipe":
    env[sys.argv[3]] = "1"
child = subprocess.Popen(
    [sys.executable, "-I", "-S", sys.argv[4], "--node-id=n1", "--session-dir=" + sys.argv[2], "--minimal"],
    env=env,
    stdin=subprocess.PIPE if sys.argv[1] == "pipe" else None,
)
print(child.pid, flush=True)
time.sleep(600)
"""


@pytest.mark.parametrize("lifeline", ["pid", "pipe"])
def test_the_stand_in_writes_the_agents_ports_and_leaves_with_its_raylet(lifeline, tmp_path):
    """``pid`` is Ray's default: the raylet passes its own stdin on, here a pipe that this test
    keeps open, which the stand-in must neither read nor take for the raylet's. ``pipe``: the
    raylet gives it a pipe of its own, closed when the raylet dies."""
    held_open = subprocess.PIPE
    raylet = subprocess.Popen(
        [
            sys.executable,
            "-c",
            RAYLET,
            lifeline,
            str(tmp_path),
            dashboard_agent_standin.PIPE_SETTING,
            dashboard_agent_standin.__file__,
        ],
        stdin=held_open,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        standin = psutil.Process(int(raylet.stdout.readline()))
        for name in dashboard_agent_standin.PORT_NAMES:
            path = tmp_path / f"{name}_n1"
            for _ in range(100):
                if path.exists():
                    break
                psutil.wait_procs([standin], timeout=0.05)
            assert path.read_text() == "-1", name
        assert standin.is_running() and standin.status() != psutil.STATUS_ZOMBIE
        raylet.send_signal(signal.SIGKILL)
        raylet.wait()
        gone, alive = psutil.wait_procs([standin], timeout=10)
        assert alive == [], f"the stand-in outlived its raylet ({lifeline})"
    finally:
        raylet.kill()
        raylet.stdin.close()
    assert sorted(os.listdir(tmp_path)) == sorted(f"{n}_n1" for n in dashboard_agent_standin.PORT_NAMES)
