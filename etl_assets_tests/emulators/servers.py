"""Start the emulators as child processes on free ports, wait until they answer, stop them after."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _answers(port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(0.5)
        return probe.connect_ex(("127.0.0.1", port)) == 0


@dataclass
class Server:
    name: str
    port: int
    process: subprocess.Popen
    log: Path

    def stop(self) -> None:
        # Only the process this module started, by its id.
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()


def start(name: str, command: Sequence[str], port: int, log: Path, env: dict | None = None) -> Server:
    """Run ``command`` and wait (up to a minute) for ``port`` to accept connections."""
    out = log.open("w")
    process = subprocess.Popen(
        list(command), stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}: {log.read_text()[-2000:]}")
        if _answers(port):
            return Server(name, port, process, log)
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"{name} did not answer on port {port} within 60 s: {log.read_text()[-2000:]}")


def start_fakesnow(folder: Path) -> Server:
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "etl_assets_tests.emulators.fakesnow_server",
        "--port",
        str(port),
        "--db-path",
        str(folder / "db"),
        "--port-file",
        str(folder / "port"),
    ]
    return start("fakesnow", command, port, folder / "fakesnow.log")


def start_moto(folder: Path, port: int) -> Server:
    command = [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    return start("moto", command, port, folder / "moto.log")


# The BigQuery emulator's own venv and the HOME under which its DuckDB finds its extensions
# (``make emulators``); ETL_TEST_BQEMULATOR_VENV points elsewhere.
REPO = Path(__file__).resolve().parents[2]
BQEMULATOR_VENV = Path(os.environ.get("ETL_TEST_BQEMULATOR_VENV", REPO / ".venv-bqemulator"))
BIGQUERY_PROJECT = "etl-test"


def start_bigquery(folder: Path) -> Server:
    executable = BQEMULATOR_VENV / "bin" / "bqemulator"
    if not executable.exists():
        raise RuntimeError(f"{executable} is missing: run `make emulators` (make test does)")
    port = free_port()
    command = [
        str(executable),
        "start",
        "--rest-port",
        str(port),
        "--grpc-port",
        str(free_port()),
        "--project",
        BIGQUERY_PROJECT,
        "--log-level",
        "warning",
    ]
    return start(
        "bqemulator", command, port, folder / "bqemulator.log", env={"HOME": str(BQEMULATOR_VENV / "home")}
    )
