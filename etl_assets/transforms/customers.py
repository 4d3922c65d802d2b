"""Customers: cleaning of CRM versions and the SCD type 2 dimension built from them."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from etl_assets.contracts import CUSTOMERS, RAW_CUSTOMERS, conform
from etl_assets.transforms.common import (
    first_row_of_each_group,
    previous_differs,
    to_utc_timestamp,
    utc_date,
)

SOURCE_COLUMNS = [
    "customer_id",
    "name",
    "email",
    "phone",
    "customer_segment",
    "country",
    "created_at",
    "updated_at",
]
ATTRIBUTES = SOURCE_COLUMNS  # what a version carries into the dimension
INCOMING = "__incoming"
# Marks the rows of a rebuild that belong to customers with an incoming version.
CHANGED = "__changed"


def clean_customers(batch: pa.Table) -> pa.Table:
    """CRM rows -> ``raw_customers`` rows: types fixed, email and phone tidied, exact duplicates collapsed.

    Exact duplicates only collapse within ``batch``: the caller co-locates rows of a customer.
    """
    if batch.num_rows == 0:
        return RAW_CUSTOMERS.schema.empty_table()
    email = batch.column("email")
    phone = batch.column("phone")
    cleaned = pa.table(
        {
            "customer_id": pc.cast(batch.column("customer_id"), pa.int64()),
            "name": batch.column("name"),
            "email": pc.utf8_lower(pc.utf8_trim_whitespace(email)),
            "phone": pc.replace_substring_regex(phone, pattern=r"\D", replacement=""),
            "customer_segment": batch.column("customer_segment"),
            "country": batch.column("country"),
            "created_at": to_utc_timestamp(batch.column("created_at")),
            "updated_at": to_utc_timestamp(batch.column("updated_at")),
        }
    )
    cleaned = cleaned.filter(first_row_of_each_group(cleaned, cleaned.column_names))
    cleaned = cleaned.append_column("updated_date", utc_date(cleaned.column("updated_at")))
    return conform(
        cleaned.sort_by([("customer_id", "ascending"), ("updated_at", "ascending")]), RAW_CUSTOMERS
    )


def mark_versions(batch: pa.Table, incoming: bool) -> pa.Table:
    """Customer versions tagged as incoming (this load) or existing (already in the dimension)."""
    versions = batch.select(ATTRIBUTES)
    # One schema for both sides (nullability differs between the two tables), so they can be unioned.
    schema = pa.schema([pa.field(f.name, f.type) for f in versions.schema])
    versions = pa.Table.from_arrays(versions.columns, schema=schema)
    return versions.append_column(INCOMING, pa.array(np.full(batch.num_rows, incoming)))


def scd2_rebuild(versions: pa.Table) -> pa.Table:
    """The SCD2 rows of every customer in ``versions``, with ``CHANGED`` true on the rows of the
    customers that have an incoming version (the only ones whose rows can differ from the table's).

    ``versions`` holds existing and incoming versions (see ``mark_versions``) and must hold every
    version of each customer it mentions. Two versions with the same ``updated_at`` are one version;
    the incoming one wins, so reloading a day is idempotent and the result does not depend on the
    order in which days were loaded.
    """
    if versions.num_rows == 0:
        return _with_changed(CUSTOMERS.schema.empty_table(), pa.array([], pa.bool_()))
    changed_ids = pc.unique(pc.filter(versions.column("customer_id"), versions.column(INCOMING)))
    # Incoming first within a key; remaining columns make the pick deterministic.
    order = [("customer_id", "ascending"), ("updated_at", "ascending"), (INCOMING, "descending")]
    order += [(c, "ascending") for c in ATTRIBUTES if c not in ("customer_id", "updated_at")]
    versions = versions.sort_by(order)
    customer = versions.column("customer_id").to_numpy()
    updated = versions.column("updated_at").cast(pa.int64()).to_numpy()
    versions = versions.filter(previous_differs([customer, updated]))

    customer = versions.column("customer_id").to_numpy()
    valid_from = versions.column("updated_at")
    has_next = np.zeros(versions.num_rows, dtype=bool)
    has_next[:-1] = customer[1:] == customer[:-1]
    next_from = pc.cast(valid_from, pa.int64()).to_numpy()
    next_from = np.append(next_from[1:], 0)
    valid_to = pa.array(next_from, mask=~has_next).cast(pa.timestamp("us")).cast(valid_from.type)
    rows = conform(
        versions.drop_columns([INCOMING])
        .append_column("valid_from", valid_from)
        .append_column("valid_to", valid_to)
        .append_column("is_current", pa.array(~has_next)),
        CUSTOMERS,
    )
    return _with_changed(rows, pc.is_in(rows.column("customer_id"), value_set=changed_ids))


def _with_changed(rows: pa.Table, changed: pa.Array) -> pa.Table:
    return rows.append_column(pa.field(CHANGED, pa.bool_(), nullable=False), changed)
