"""The persistent local Ray of `make ray-up` / `make ray-down`: a run reaches it, and stopping it
stops exactly what it started."""

import contextlib
import os
import subprocess
import sys

import psutil

from etl_assets import ray_cluster
from etl_assets_tests.private_ray_probe import agent_of


def test_a_run_connects_to_the_persistent_ray_and_down_stops_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(ray_cluster, "STATE", tmp_path / "ray")
    # One spill worker: the run below reads the setting back from the cluster's own config.
    env = ray_cluster.up(num_cpus=1, object_store_mb=128, spill_workers=1)
    try:
        pid = ray_cluster.running_pid()
        assert pid is not None
        assert env["RAY_AUTH_MODE"] == "token" and os.stat(env["RAY_AUTH_TOKEN_PATH"]).st_mode & 0o077 == 0
        # A fresh process, as a Dagster run would be, with only the printed variables: the run's
        # resource connects, and disconnects after the run without stopping the cluster.
        # The cluster says it is of fixed size: a Dataset execution starts no Ray Data actor on it,
        # and starts both once this process forgets that (the control).
        script = (
            "import dagster as dg, ray\n"
            "from etl_assets import fixed_size_ray\n"
            "from etl_assets.resources import RayResource\n"
            "def data_actors():\n"
            "    if ray.data.range(4, override_num_blocks=2).map_batches(lambda b: b).count() != 4:\n"
            "        raise AssertionError('a Dataset of 4 rows did not count 4')\n"
            "    return sorted(a['name'] for a in ray.util.list_named_actors(all_namespaces=True))\n"
            "@dg.asset\n"
            "def answer(ray_cluster: RayResource) -> int:\n"
            "    config = ray._private.state.state.get_system_config()\n"
            "    print('max_io_workers:', config.get('max_io_workers'))\n"
            "    print('data actors:', data_actors())\n"
            "    fixed_size_ray._FIXED_SIZE.clear()\n"
            "    print('data actors as shipped:', data_actors())\n"
            "    return ray.get(ray.remote(lambda: 41 + 1).remote())\n"
            "result = dg.materialize([answer], resources={'ray_cluster': RayResource()})\n"
            "print('connected after the run:', ray.is_initialized())\n"
            "print(result.output_for_node('answer'))\n"
        )
        done = subprocess.run(
            [sys.executable, "-c", script],
            env={**{k: v for k, v in os.environ.items() if not k.startswith("RAY_")}, **env},
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.stdout.strip().endswith("42"), done.stderr[-2000:]
        assert "connected after the run: False" in done.stdout
        assert ray_cluster.running_pid() == pid
        assert "max_io_workers: 1" in done.stdout, done.stdout[-2000:]
        assert "data actors: []" in done.stdout, done.stdout[-2000:]
        shipped = "data actors as shipped: ['AutoscalingCoordinator', 'datasets_stats_actor']"
        assert shipped in done.stdout, done.stdout[-2000:]
        # The head's raylet runs the dashboard agent's stand-in (``dashboard_agent_standin``) beside
        # Ray's runtime-env agent, which shows that Ray's agents would be seen here.
        agents = {}
        for process in psutil.Process(pid).children(recursive=True):
            with contextlib.suppress(psutil.Error):
                agents[agent_of(process.cmdline())] = process
        assert {"dashboard_agent_standin.py", "ray::RuntimeEnvAgent"} <= set(agents), agents
        assert "ray::DashboardAgent" not in agents, agents
        assert ray_cluster.up(num_cpus=1, object_store_mb=128) == env  # already up: the same cluster
        assert capsys.readouterr().err == ""
        # A head an earlier version started, without the resource: `up` says how to restart it.
        (tmp_path / "ray" / "resources").unlink()
        assert ray_cluster.up(num_cpus=1, object_store_mb=128) == env
        assert "`make ray-down && make ray-up` restarts it" in capsys.readouterr().err
    finally:
        ray_cluster.down()
    assert ray_cluster.running_pid() is None
    _, alive = psutil.wait_procs([p for name, p in agents.items() if name], timeout=10)
    assert alive == [], alive
    # Gone, or a zombie left for this test process (its parent here) to reap.
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert ray_cluster.client_env() == {}
    assert not (tmp_path / "ray" / "auth_token").exists()
