"""Settings every Ray-backed asset shares."""

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import dagster as dg

from etl_assets.contracts.validation import ContractViolation, SchemaMismatch
from etl_assets.partitions import DAILY, SINGLE_RUN
from etl_assets.ray_steps import error_message, user_error
from etl_assets.sources.crm import SourceError

RAY_KINDS = {"ray", "deltalake"}

# Transient failures (a lost worker, a busy object store) are retried; source errors are not.
RAY_RETRY = dg.RetryPolicy(max_retries=2, delay=5, backoff=dg.Backoff.EXPONENTIAL)

# Op concurrency pool: at most one Ray job at a time on a small machine (see dagster.yaml).
RAY_POOL = "ray"

# What every daily, Ray-backed asset shares: a backfill of any range is one run and one Ray job.
DAILY_RAY_ASSET = {
    "partitions_def": DAILY,
    "backfill_policy": SINGLE_RUN,
    "retry_policy": RAY_RETRY,
    "pool": RAY_POOL,
}


FATAL = (SourceError, FileNotFoundError, ContractViolation, SchemaMismatch)


@contextmanager
def source_failures() -> Iterator[None]:
    """A source problem or a contract violation fails the run at once, with its message and no
    retries: neither goes away by running again. Found also inside the wrapper Ray puts around
    an error raised in a worker."""
    try:
        yield
    except Exception as exc:
        fatal = user_error(exc, FATAL)
        if fatal is None:
            raise
        raise dg.Failure(description=error_message(fatal), allow_retries=False) from exc


# The daily schedule runs at 01:00 UTC: a daily mart is late if not refreshed by 03:00 UTC.
DAILY_MART_FRESHNESS = dg.FreshnessPolicy.cron(
    deadline_cron="0 3 * * *", lower_bound_delta=timedelta(hours=3)
)
