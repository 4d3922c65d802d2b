"""A stand-in for Ray's dashboard agent where Ray is installed without the dashboard.

Every raylet starts a dashboard agent (``ray/dashboard/agent.py``) and exits if it dies. With
``ray[data]`` alone (this project's install: no ``ray[default]``), the agent runs ``--minimal``:
it loads none of its modules (their dependencies are missing), serves neither metrics nor HTTP,
writes ``-1`` as the port of each of its three services into the session folder (the raylet
waits for those files before it registers the node) and then watches the raylet until it goes.
It is still a Python process importing Ray: about 105 MiB of RSS for as long as Ray runs, and its
imports compete with the raylet's first workers for the cores while Ray starts.

This stand-in does what that minimal agent does for the raylet (the port files, then wait for
the raylet as the agent waits for it) as ``python -I -S`` running this file, with nothing but
the standard library: about 9 MiB. What the minimal agent does besides is lost: it writes its
address under two keys of the GCS, which only the dashboard's own modules read (absent here);
and when the raylet dies unexpectedly, it sends the tail of the raylet's log to the driver as an
error message (the driver still learns that its raylet died from its own connection, and the log
stays in the session folder). ``ray stop``, which kills Ray's processes by their titles, does not
know the stand-in's: it leaves with its raylet.

``standin_for_dashboard_agent`` puts it in the raylet's command while Ray starts in this
process (``ray.init`` of a private Ray, or ``ray start`` for the persistent one). Ray takes the
agent's command only as an argument it builds inside ``ray._private.services.start_raylet``,
so the wrapper rewrites that argument on its way to ``start_ray_process``. Where the dashboard's
dependencies are installed the real agent serves metrics and the job API, and it stays. Ray is
pinned to 2.60; should a later Ray rename the argument or the port files, nothing is rewritten
(the real agent runs) or the raylet waits for its port files and ``ray.init`` times out: the
tests start Ray through this module and fail either way loudly.
"""

import os
import sys
import time
from contextlib import contextmanager

# The port files the minimal agent writes (``ray._raylet.persist_port``: ``<name>_<node id>`` in
# the session folder, holding the port as text; -1 for a service that is not there).
PORT_NAMES = ("metrics_agent_port", "metrics_export_port", "dashboard_agent_listen_port")
AGENT_ARGUMENT = "--dashboard_agent_command="


def _options(argv: list[str]) -> dict[str, str]:
    return dict(arg[2:].split("=", 1) for arg in argv if arg.startswith("--") and "=" in arg)


def write_port_files(session_dir: str, node_id: str) -> None:
    for name in PORT_NAMES:
        path = os.path.join(session_dir, f"{name}_{node_id}")
        # Whole or absent: the raylet polls for the file and reads it as soon as it exists.
        with open(path + ".tmp", "w") as port_file:
            port_file.write("-1")
        os.replace(path + ".tmp", path)


# Ray's agents take the raylet's pipe on stdin as their lifeline only when the raylet says it
# gave them one (``ray.dashboard.consts.PARENT_HEALTH_CHECK_BY_PIPE``); otherwise stdin is
# whatever the raylet inherited (the driver's, or that of the shell of ``make ray-up``), which
# must be neither read nor taken as the raylet's.
PIPE_SETTING = "RAY_enable_pipe_based_agent_to_parent_health_check"
# Ray's agents poll every 0.4 s (``DASHBOARD_AGENT_CHECK_PARENT_INTERVAL_S``).
POLL_SECONDS = 0.4


def wait_for_raylet() -> None:
    """Return when the raylet is gone, watched as Ray's minimal agent watches it: the end of the
    raylet's pipe on stdin closes, or (the default) this process's parent is no longer the
    raylet whose pid the raylet gave (``RAY_RAYLET_PID``), which also holds when the raylet died
    before this process looked."""
    if os.environ.get(PIPE_SETTING, "").lower() in ("1", "true"):
        while sys.stdin.buffer.read(4096):
            pass
        return
    raylet = int(os.environ["RAY_RAYLET_PID"])
    while os.getppid() == raylet:
        time.sleep(POLL_SECONDS)


def main(argv: list[str]) -> None:
    options = _options(argv)
    write_port_files(options["session-dir"], options["node-id"])
    wait_for_raylet()


def standin_command(agent_command: str) -> str:
    """The raylet's agent command with this file in place of Ray's agent, keeping its options."""
    import shlex
    import subprocess

    options = [word for word in shlex.split(agent_command) if word.startswith("--")]
    return subprocess.list2cmdline([sys.executable, "-I", "-S", os.path.abspath(__file__), *options])


def _agent_is_minimal() -> bool:
    from ray._private.utils import get_dashboard_dependency_error

    return get_dashboard_dependency_error() is not None


@contextmanager
def standin_for_dashboard_agent():
    """While in it, a raylet started by this process runs the stand-in instead of a minimal agent."""
    from ray._private import services

    if not _agent_is_minimal():
        yield
        return
    shipped = services.start_ray_process

    def start_ray_process(command, process_type, *args, **kwargs):
        if process_type == "raylet":
            command = [
                AGENT_ARGUMENT + standin_command(arg[len(AGENT_ARGUMENT) :])
                if arg.startswith(AGENT_ARGUMENT)
                else arg
                for arg in command
            ]
        return shipped(command, process_type, *args, **kwargs)

    services.start_ray_process = start_ray_process
    try:
        yield
    finally:
        services.start_ray_process = shipped


def ray_cli() -> None:
    """Ray's command line (``ray start``) with the stand-in: ``python -c`` runs it for ``make ray-up``."""
    from ray.scripts.scripts import main as ray_main

    with standin_for_dashboard_agent():
        ray_main()


if __name__ == "__main__":
    main(sys.argv[1:])
