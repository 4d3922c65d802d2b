"""Warehouse backends behind one interface: replace a day window, merge by key, append, read."""

from etl_assets.warehouse.base import ReplaceResult, Warehouse, WriteResult

__all__ = ["ReplaceResult", "Warehouse", "WriteResult"]
