"""A process that loads the code location has its objects frozen when it exits, so Python's last
collections do not walk them."""

import subprocess
import sys

EXITING = """
import atexit, gc, sys
if sys.argv[1] == "duckdb":
    import duckdb
    duckdb.sql("select 1").fetchall()
import etl_assets.definitions
before = gc.get_freeze_count()
atexit._run_exitfuncs()  # what the interpreter runs before its last collections
print(before, gc.get_freeze_count())
"""


def exit_of(loaded: str) -> tuple[int, int, str]:
    done = subprocess.run([sys.executable, "-c", EXITING, loaded], capture_output=True, text=True, check=True)
    before, after = map(int, done.stdout.split())
    return before, after, done.stderr


def test_loading_the_code_location_freezes_every_object_when_the_process_exits():
    before, after, _ = exit_of("platform")
    assert before == 0
    # Everything alive at exit is frozen: Dagster's, Ray's and the platform's objects, hundreds of
    # thousands (a process that only started Python holds a few thousand).
    assert after > 100_000


def test_a_process_with_duckdb_keeps_its_collections_and_reports_no_leak():
    before, after, stderr = exit_of("duckdb")
    assert (before, after) == (0, 0)
    assert "leaked" not in stderr
