"""A process that loaded the code location exits without Python's last garbage collections."""

import atexit
import gc
import sys

# Extension modules that report the objects still alive at exit as leaks (DuckDB's nanobind
# bindings print "nanobind: leaked ... instances" for each), so a process that loaded one keeps
# Python's own collections at exit. The platform itself never loads DuckDB: only the tests and
# benchmarks that compare with it do.
REPORT_LEAKS_AT_EXIT = ("duckdb",)


def _freeze_before_exit() -> None:
    if any(name in sys.modules for name in REPORT_LEAKS_AT_EXIT):
        return
    # Python's shutdown collects garbage over every object still alive, several times while it
    # tears the modules down: with Dagster, Ray, pandera and polars loaded that is most of a
    # second on every CLI run, for memory the operating system takes back anyway. Frozen objects
    # are left out. Objects still go when their last reference does, so only cycles stay.
    gc.freeze()


def skip_final_collection() -> None:
    """Leave the garbage collections at interpreter shutdown out (``atexit`` runs before them)."""
    atexit.register(_freeze_before_exit)
