"""Pure transforms over ``pyarrow.Table`` batches. Nothing here imports Dagster or Ray."""
