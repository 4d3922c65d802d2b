"""Asset checks: contracts and business rules, evaluated on what the warehouse holds."""

import warnings

import dagster as dg

# Partitioned checks are what lets a multi-day run report one result per day; Dagster 1.13 marks
# them as preview and would print this once per check at every import.
warnings.filterwarnings(
    "ignore",
    message="Specifying a partitions_def on an AssetCheckSpec is currently in preview",
    category=dg.PreviewWarning,
)
