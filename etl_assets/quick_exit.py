"""A process that loaded the code location exits without collecting garbage one last time."""

import atexit
import gc


def _freeze_before_exit() -> None:
    # Python's shutdown runs a full collection over every object still alive: with Dagster, Ray,
    # pandera and polars loaded that is most of a second, on every CLI run, for memory the
    # operating system takes back anyway. Frozen objects are left out of it. Objects still go
    # when their last reference does (module teardown), so only unreachable cycles are skipped.
    gc.freeze()


def skip_final_collection() -> None:
    """Leave the garbage collection at interpreter shutdown out (``atexit`` runs before it)."""
    atexit.register(_freeze_before_exit)
