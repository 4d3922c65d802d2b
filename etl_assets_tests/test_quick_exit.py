"""A process that loads the code location skips Python's last garbage collection at exit."""

import subprocess
import sys

EXITING = """
import atexit, gc
import etl_assets.definitions
before = gc.get_freeze_count()
atexit._run_exitfuncs()  # what the interpreter runs first when it shuts down
print(before, gc.get_freeze_count())
"""


def test_loading_the_code_location_freezes_every_object_when_the_process_exits():
    done = subprocess.run([sys.executable, "-c", EXITING], capture_output=True, text=True, check=True)
    before, after = map(int, done.stdout.split())
    assert before == 0
    # Everything alive at exit (Dagster's, Ray's and the platform's objects) is frozen.
    assert after > 100_000
