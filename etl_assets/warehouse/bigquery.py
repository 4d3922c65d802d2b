"""BigQuery backend, reached through ``dagster-gcp``'s ``BigQueryResource``.

Workers send each block as Parquet in a load job (``WRITE_APPEND``) into the write's staging table.
The driver then runs one multi-statement transaction: ``DELETE`` of the partitions + ``INSERT``
for a partition replace, ``MERGE`` for an upsert. Daily tables are date-partitioned on their day
column; nothing deletes or truncates a whole table to replace part of it.
"""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from google.api_core.client_options import ClientOptions
from google.api_core.exceptions import Forbidden, NotFound, TooManyRequests
from google.auth.credentials import AnonymousCredentials
from google.cloud import bigquery
from google.oauth2 import service_account

from etl_assets.contracts import TableContract
from etl_assets.warehouse.sql import SqlWarehouse


def bigquery_type(arrow_type: pa.DataType) -> str:
    if pa.types.is_integer(arrow_type):
        return "INT64"
    if pa.types.is_floating(arrow_type):
        return "FLOAT64"
    if pa.types.is_decimal(arrow_type):
        return f"NUMERIC({arrow_type.precision},{arrow_type.scale})"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return "STRING"
    if pa.types.is_boolean(arrow_type):
        return "BOOL"
    if pa.types.is_date(arrow_type):
        return "DATE"
    if pa.types.is_timestamp(arrow_type):
        return "TIMESTAMP" if arrow_type.tz else "DATETIME"
    if pa.types.is_list(arrow_type):
        return f"ARRAY<{bigquery_type(arrow_type.value_type)}>"
    raise TypeError(f"no BigQuery type for {arrow_type}")


@dataclass(frozen=True)
class BigQueryAccess:
    """Everything a process needs to open its own client: picklable, so Ray workers get it too.

    ``credentials_json`` is the resource's service-account key when it was given one (kept out of
    ``repr``); otherwise each process uses Google's default credentials, as ``BigQueryResource`` does.
    """

    project: str
    dataset: str
    location: str | None = None
    endpoint: str | None = None
    credentials_json: str | None = field(default=None, repr=False)

    @classmethod
    def from_resource(cls, resource: Any, dataset: str, endpoint: str | None) -> BigQueryAccess:
        key = None
        if getattr(resource, "gcp_credentials", None):
            key = base64.b64decode(resource.gcp_credentials).decode("utf-8")
        return cls(resource.project, dataset, resource.location, endpoint, key)

    def client(self) -> bigquery.Client:
        options: dict[str, Any] = {"project": self.project, "location": self.location}
        if self.endpoint:
            # An emulator: no Google credentials to present.
            options["client_options"] = ClientOptions(api_endpoint=self.endpoint)
            options["credentials"] = AnonymousCredentials()
        elif self.credentials_json:
            options["credentials"] = service_account.Credentials.from_service_account_info(
                json.loads(self.credentials_json)
            )
        return bigquery.Client(**options)


_CLIENTS: dict[BigQueryAccess, bigquery.Client] = {}
LOAD_ATTEMPTS = 6


def _client(access: BigQueryAccess) -> bigquery.Client:
    # One client per worker process, reused for every block it loads.
    if access not in _CLIENTS:
        _CLIENTS[access] = access.client()
    return _CLIENTS[access]


class BigQueryStageLoader:
    """Picklable: one block as a Parquet load job appended to the staging table."""

    def __init__(self, access: BigQueryAccess):
        self.access = access

    def __call__(self, table_name: str, rows: pa.Table) -> None:
        buffer = io.BytesIO()
        pq.write_table(rows, buffer)
        config = bigquery.LoadJobConfig(
            source_format=bigquery.SourceFormat.PARQUET,
            write_disposition=bigquery.WriteDisposition.WRITE_APPEND,
        )
        config.parquet_options = bigquery.ParquetOptions()
        config.parquet_options.enable_list_inference = True
        destination = f"{self.access.project}.{self.access.dataset}.{table_name}"
        for attempt in range(LOAD_ATTEMPTS):
            buffer.seek(0)
            try:
                _client(self.access).load_table_from_file(buffer, destination, job_config=config).result()
                return
            except (Forbidden, TooManyRequests) as exc:
                # Parallel loads into one staging table can pass BigQuery's rate of table updates;
                # a failed load job loaded nothing, so trying it again is safe.
                if "rateLimitExceeded" not in str(exc) or attempt == LOAD_ATTEMPTS - 1:
                    raise
                time.sleep(min(2**attempt, 30))


class BigQueryQueryRunner:
    """Picklable: one query's rows as Arrow, in a Ray read task."""

    def __init__(self, access: BigQueryAccess):
        self.access = access

    def __call__(self, sql: str) -> pa.Table:
        return _client(self.access).query(sql).result().to_arrow(create_bqstorage_client=False)


class BigQueryWarehouse(SqlWarehouse):
    """Tables in one dataset, one per contract, named as the contract."""

    def __init__(self, access: BigQueryAccess):
        self.access = access
        self._client = access.client()
        self._dataset_ready = False

    def qualified(self, name: str) -> str:
        return f"`{self.access.project}.{self.access.dataset}.{name}`"

    def location(self, table: TableContract) -> str:
        return f"bigquery://{self.access.project}/{self.access.dataset}/{table.name}"

    def sql_type(self, arrow_type: pa.DataType) -> str:
        return bigquery_type(arrow_type)

    def same_type(self, found: str, wanted: str) -> bool:
        # A NUMERIC column reported without its precision (as emulators do) holds what was declared.
        if found == "NUMERIC" and wanted.startswith("NUMERIC("):
            return True
        return super().same_type(found, wanted)

    def prepare(self) -> None:
        if not self._dataset_ready:
            dataset = bigquery.Dataset(f"{self.access.project}.{self.access.dataset}")
            if self.access.location:
                dataset.location = self.access.location
            self._client.create_dataset(dataset, exists_ok=True)
            self._dataset_ready = True

    def table_clauses(self, contract: TableContract, staging: bool) -> str:
        if staging:
            # A staging table the write failed to drop expires by itself.
            return " OPTIONS (expiration_timestamp = TIMESTAMP_ADD(CURRENT_TIMESTAMP(), INTERVAL 1 DAY))"
        column = contract.partition_column
        if column is None:
            return ""
        if pa.types.is_date(contract.schema.field(column).type):
            return f" PARTITION BY {column}"
        # Batch ids are not dates: clustering keeps a batch's rows together for its DELETE and reads.
        return f" CLUSTER BY {column}"

    def column_types(self, name: str) -> dict[str, str] | None:
        try:
            table = self._client.get_table(f"{self.access.project}.{self.access.dataset}.{name}")
        except NotFound:
            return None
        return {field.name.lower(): _spelled(field) for field in table.schema}

    def execute(self, sql: str) -> None:
        self._client.query(sql).result()

    def run_in_transaction(self, statements: Sequence[str]) -> None:
        # One script, one job: BigQuery commits it whole or rolls it back.
        script = "BEGIN TRANSACTION;\n" + ";\n".join(statements) + ";\nCOMMIT TRANSACTION;"
        self._client.query(script).result()

    def query(self, sql: str) -> pa.Table:
        return self._client.query(sql).result().to_arrow(create_bqstorage_client=False)

    def stream(self, sql: str) -> Iterator[pa.Table]:
        rows = self._client.query(sql).result(page_size=100_000)
        for batch in rows.to_arrow_iterable():
            yield pa.Table.from_batches([batch])

    def stage_loader(self) -> BigQueryStageLoader:
        return BigQueryStageLoader(self.access)

    def query_runner(self) -> BigQueryQueryRunner:
        return BigQueryQueryRunner(self.access)

    def typed_literal(self, quoted: str, sql_type: str) -> str:
        return f"{sql_type} {quoted}"


def _spelled(field: bigquery.SchemaField) -> str:
    """A stored column's type as ``bigquery_type`` spells the contract's."""
    kind = {"INTEGER": "INT64", "FLOAT": "FLOAT64", "BOOLEAN": "BOOL"}.get(field.field_type, field.field_type)
    if kind in ("NUMERIC", "BIGNUMERIC") and field.precision is not None:
        kind = f"{kind}({field.precision},{field.scale or 0})"
    if field.mode == "REPEATED":
        kind = f"ARRAY<{kind}>"
    return kind
