"""A process that loaded the code location exits without Python's last collections walking every
object it holds."""

import atexit
import gc
import sys

# Extension modules that report the objects still alive at exit as leaks (DuckDB's nanobind
# bindings print "nanobind: leaked ... instances" for each), so a process that loaded one keeps
# Python's full collections at exit. The platform itself never loads DuckDB: only the tests and
# benchmarks that compare with it do.
REPORT_LEAKS_AT_EXIT = ("_duckdb",)


def _freeze_before_exit() -> None:
    if any(name in sys.modules for name in REPORT_LEAKS_AT_EXIT):
        return
    # After the atexit hooks, Python's shutdown collects garbage over every object still alive,
    # more than once as it tears the modules down: with Dagster, Ray, pandera and polars loaded
    # that is most of a second on every CLI run. Frozen objects are left out of those walks.
    # Objects still go when their last reference does; what stays is garbage in reference
    # cycles, whose finalizers then never run. Nothing here relies on them: files, database
    # connections and Ray are closed explicitly (the run's resources at teardown, Ray's and
    # logging's own atexit hooks after this one).
    gc.freeze()


def skip_final_collection() -> None:
    """Have Python's collections at interpreter shutdown skip the objects alive when it begins
    (``atexit`` hooks run before them)."""
    atexit.register(_freeze_before_exit)
