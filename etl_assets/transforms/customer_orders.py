"""Point-in-time join of orders to the customer version valid when each order was placed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from etl_assets.contracts import CUSTOMER_ORDERS, conform

DIMENSION_COLUMNS = ["customer_id", "valid_from", "name", "customer_segment", "country"]
# Dimension column -> its name in customer_orders.
JOINED_COLUMNS = {
    "name": "customer_name",
    "customer_segment": "customer_segment",
    "country": "country",
    "valid_from": "customer_valid_from",
}


# Ids spanning at most this many values (times the number of ids) are found by direct lookup.
DENSE_SPAN_FACTOR = 8


@dataclass(frozen=True)
class Dimension:
    """Customer versions sorted by (customer_id, valid_from), with each customer's run of rows."""

    versions: pa.Table
    ids: np.ndarray  # distinct customer ids, ascending
    starts: np.ndarray  # first row of each id's versions
    ends: np.ndarray  # one past its last row
    valid_from: np.ndarray  # int64 microseconds, ascending within each id
    # For dense ids: slot (index into ids) of id ``base + i`` at ``[i]``, -1 for an unknown id.
    slots: np.ndarray | None
    base: int

    def slot_of(self, customer: np.ndarray) -> np.ndarray:
        """Index into ``ids`` of each customer id, -1 for an id with no version."""
        if self.slots is not None:
            offset = customer - self.base
            inside = (offset >= 0) & (offset < len(self.slots))
            return np.where(inside, self.slots[np.where(inside, offset, 0)], -1)
        slot = np.searchsorted(self.ids, customer)
        found = slot < len(self.ids)
        found[found] = self.ids[slot[found]] == customer[found]
        return np.where(found, slot, -1)


def prepare_dimension(customers: pa.Table) -> Dimension:
    """Customer versions sorted for the as-of search: built once per worker, reused for every block."""
    versions = customers.select(DIMENSION_COLUMNS).sort_by(
        [("customer_id", "ascending"), ("valid_from", "ascending")]
    )
    customer = versions.column("customer_id").to_numpy()
    starts = np.flatnonzero(np.r_[True, customer[1:] != customer[:-1]]) if len(customer) else np.zeros(0, int)
    ids = customer[starts]
    slots, base = None, 0
    if len(ids) and int(ids[-1]) - int(ids[0]) < DENSE_SPAN_FACTOR * len(ids) + 1024:
        base = int(ids[0])
        slots = np.full(int(ids[-1]) - base + 1, -1, dtype=np.int64)
        slots[ids - base] = np.arange(len(ids))
    return Dimension(
        versions=versions,
        ids=ids,
        starts=starts,
        ends=np.r_[starts[1:], len(customer)].astype(starts.dtype),
        valid_from=pc.cast(versions.column("valid_from"), pa.int64()).to_numpy(),
        slots=slots,
        base=base,
    )


def version_positions(customer: np.ndarray, at: np.ndarray, dim: Dimension) -> np.ndarray:
    """Per (customer, instant): the row of ``dim`` holding that customer's latest version with
    ``valid_from <= instant``, or -1. Customers have few versions, so each pass steps every row
    still moving one version forward; the rows left shrink fast."""
    slot = dim.slot_of(customer)
    result = np.full(len(customer), -1, dtype=np.int64)
    rows = np.flatnonzero(slot >= 0)
    position = dim.starts[slot[rows]]
    end = dim.ends[slot[rows]]
    # Rows whose first version starts later than the instant are orphans.
    valid = dim.valid_from[position] <= at[rows]
    rows, position, end = rows[valid], position[valid], end[valid]
    while len(rows):
        step = position + 1 < end
        step[step] = dim.valid_from[position[step] + 1] <= at[rows[step]]
        result[rows[~step]] = position[~step]
        rows, position, end = rows[step], position[step] + 1, end[step]
    return result


def join_point_in_time(orders: pa.Table, dim: Dimension) -> pa.Table:
    """Each order with the latest customer version whose ``valid_from <= order_ts``.

    Orders without such a version stay, with null customer columns and ``is_orphan`` true.
    """
    if orders.num_rows == 0:
        return CUSTOMER_ORDERS.schema.empty_table()
    customer = orders.column("customer_id").combine_chunks()
    instants = pc.cast(orders.column("order_ts"), pa.int64()).combine_chunks()
    # A null id or timestamp matches no version.
    present = pc.and_(pc.is_valid(customer), pc.is_valid(instants)).to_numpy(zero_copy_only=False)
    positions = np.full(orders.num_rows, -1)
    positions[present] = version_positions(
        customer.to_numpy(zero_copy_only=False)[present],
        instants.to_numpy(zero_copy_only=False)[present],
        dim,
    )
    orphan = positions < 0
    matched = dim.versions.select(list(JOINED_COLUMNS)).take(pa.array(positions, mask=orphan))
    table = orders
    for source, target in JOINED_COLUMNS.items():
        table = table.append_column(target, matched.column(source))
    table = table.append_column("is_orphan", pa.array(orphan))
    return conform(table, CUSTOMER_ORDERS)
