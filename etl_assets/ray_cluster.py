"""A persistent local Ray for many runs: ``make ray-up`` / ``make ray-down``.

    python -m etl_assets.ray_cluster up      # starts it, prints the variables that reach it
    python -m etl_assets.ray_cluster down    # stops exactly the Ray it started

Runs started with those variables (``make dev`` and ``make demo`` set them when this Ray is up)
connect to it instead of starting a private Ray each: a daily run saves Ray's start-up and its
workers' imports. The cluster takes token authentication, with a token made for it and kept
(readable by its owner only) beside its address. The head runs as ``ray start --block`` in a
session of its own; stopping it signals that session only, never other Rays on the machine (no
``ray stop``).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import suppress
from pathlib import Path

STATE = Path(os.environ.get("ETL_RAY_STATE", ".ray"))
HOST = "127.0.0.1"
START_TIMEOUT = 60
# `ray start --block` drains its processes for up to about 30 s after SIGTERM.
STOP_TIMEOUT = 45
# A resource of the head that says the cluster is of fixed size (nothing autoscales it, and it
# runs no dashboard): runs connecting to it spare Ray Data's helper actors (``fixed_size_ray``).
FIXED_SIZE_RESOURCE = "etl_assets_fixed_size"
HEAD_RESOURCES = {FIXED_SIZE_RESOURCE: 1}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _alive(pid: int) -> bool:
    """Whether ``pid`` is still the head this module started (a dead head's pid may be reused)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            words = cmdline.read().split(b"\0")
    except OSError:
        return False
    return b"start" in words and b"--head" in words


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


def running_pid() -> int | None:
    pid_file = STATE / "head.pid"
    if pid_file.exists():
        pid = int(pid_file.read_text())
        if _alive(pid):
            return pid
    return None


def client_env() -> dict[str, str]:
    """The variables a run needs to connect to the running cluster (empty when none runs)."""
    if running_pid() is None or not (STATE / "address").exists():
        return {}
    return {
        "RAY_ADDRESS": (STATE / "address").read_text().strip(),
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str((STATE / "auth_token").resolve()),
        # As the head runs (``--disable-usage-stats``). A driver that connects keeps Ray's usage
        # stats on otherwise, and Ray Data then starts an actor on the cluster to collect them.
        "RAY_USAGE_STATS_ENABLED": "0",
    }


def spill_settings(spill_workers: int | None) -> dict[str, int]:
    """Ray's system settings for at most ``spill_workers`` processes spilling objects to disk and as
    many restoring them (Ray's ``max_io_workers``; none given keeps Ray's default of 4 of each).

    Each of those processes maps the object store and counts it in its own memory; on a small
    machine one of each keeps up with the disk. Ray takes them as ``ray.init(_system_config=...)``
    or ``ray start --system-config``, its only ways in besides a ``RAY_max_io_workers`` variable
    that every process of the driver's would inherit.
    """
    return {"max_io_workers": spill_workers} if spill_workers else {}


def up(num_cpus: int | None, object_store_mb: int, spill_workers: int | None = None) -> dict[str, str]:
    """Start the persistent Ray unless one runs already; the variables that reach it."""
    if running_pid() is not None:
        if not (STATE / "resources").exists():
            # A head started by an earlier version, without FIXED_SIZE_RESOURCE: runs still work,
            # with Ray Data's two helper actors on it (about 400 MiB).
            print(
                "the persistent Ray running was started by an earlier etl_assets: "
                "`make ray-down && make ray-up` restarts it without Ray Data's helper actors",
                file=sys.stderr,
            )
        return client_env()
    STATE.mkdir(parents=True, exist_ok=True)
    token = STATE / "auth_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    port = _free_port()
    # Ray's socket paths must stay short: its temp dir lives directly under the system temp dir.
    temp_dir = tempfile.mkdtemp(prefix="etl_ray_head_", dir="/tmp")
    command = [
        # Ray's own `ray start`, in a process that runs the dashboard agent's stand-in.
        sys.executable,
        "-c",
        "from etl_assets.dashboard_agent_standin import ray_cli; ray_cli()",
        "start",
        "--head",
        "--block",
        # Without it the head advertises the machine's outward address, which clients here may
        # not reach; the address printed below is the loopback one.
        f"--node-ip-address={HOST}",
        f"--port={port}",
        f"--object-store-memory={object_store_mb * 2**20}",
        f"--temp-dir={temp_dir}",
        "--include-dashboard=false",
        "--disable-usage-stats",
        f"--resources={json.dumps(HEAD_RESOURCES)}",
    ]
    if num_cpus:
        command.append(f"--num-cpus={num_cpus}")
    if spill_workers:
        command.append(f"--system-config={json.dumps(spill_settings(spill_workers))}")
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token.resolve())}
    with open(STATE / "head.log", "w") as log:
        head = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
    (STATE / "head.pid").write_text(str(head.pid))
    (STATE / "temp_dir").write_text(temp_dir)
    (STATE / "resources").write_text(json.dumps(HEAD_RESOURCES) + "\n")
    address = f"{HOST}:{port}"
    deadline = time.monotonic() + START_TIMEOUT
    while not _listening(port):
        if head.poll() is not None or time.monotonic() > deadline:
            down()
            raise SystemExit(f"ray head did not start; see {STATE / 'head.log'}")
        time.sleep(0.2)
    (STATE / "address").write_text(address + "\n")
    return client_env()


def down() -> None:
    pid = running_pid()
    if pid is not None:
        # The head was started in a session of its own: its group is exactly what it started.
        with suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _alive(pid):
            with suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
    temp_dir = STATE / "temp_dir"
    if temp_dir.exists():
        shutil.rmtree(temp_dir.read_text(), ignore_errors=True)
    for name in ("head.pid", "address", "temp_dir", "auth_token", "resources"):
        (STATE / name).unlink(missing_ok=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("action", choices=["up", "down"])
    parser.add_argument("--num-cpus", type=int, default=None)
    parser.add_argument("--object-store-mb", type=int, default=1024)
    parser.add_argument("--spill-workers", type=int, default=None)
    args = parser.parse_args()
    if args.spill_workers is not None and args.spill_workers < 1:
        parser.error("--spill-workers must be at least 1")
    if args.action == "up":
        for name, value in up(args.num_cpus, args.object_store_mb, args.spill_workers).items():
            print(f"export {name}={value}")
    else:
        down()


if __name__ == "__main__":
    main()
