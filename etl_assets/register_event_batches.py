"""Register every ready landing batch as a partition of ``event_batches`` in the Dagster instance
(what the landing sensor does on its first tick), and print the range ``first...last``.

    python -m etl_assets.register_event_batches

Used by ``make demo`` so the headless run can load every sample batch in one run.
"""

import dagster as dg

from etl_assets.partitions import EVENT_BATCHES
from etl_assets.resources import SourcesResource
from etl_assets.sources.landing import ready_batches


def main() -> None:
    batches = ready_batches(SourcesResource().events_landing_dir)
    if not batches:
        raise SystemExit("no event batch in the landing zone")
    with dg.DagsterInstance.get() as instance:
        known = set(instance.get_dynamic_partitions(EVENT_BATCHES.name))
        instance.add_dynamic_partitions(EVENT_BATCHES.name, [b for b in batches if b not in known])
        ordered = [b for b in instance.get_dynamic_partitions(EVENT_BATCHES.name) if b in set(batches)]
    print(f"{ordered[0]}...{ordered[-1]}")


if __name__ == "__main__":
    main()
