"""Configuration read from the environment (DESIGN.md, "Configuration").

Every variable is optional; the defaults run the whole platform on one laptop against the
embedded sample under ``./data``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from etl_assets import storage

WAREHOUSE_KINDS = ("delta", "snowflake", "bigquery")


@dataclass(frozen=True)
class Settings:
    # A local folder (made absolute) or an object-storage URI such as s3://bucket/prefix.
    data_dir: str
    crm_url: str
    warehouse: str

    @property
    def warehouse_dir(self) -> str:
        return storage.join(self.data_dir, "warehouse")


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Read ``ETL_DATA_DIR``, ``ETL_CRM_URL`` and ``ETL_WAREHOUSE`` (each optional)."""
    env = os.environ if environ is None else environ
    data_dir = env.get("ETL_DATA_DIR") or "./data"
    if not storage.is_uri(data_dir):
        data_dir = os.path.realpath(data_dir)
    crm_url = env.get("ETL_CRM_URL")
    if not crm_url:
        if storage.is_uri(data_dir):
            raise ValueError(
                f"ETL_DATA_DIR={data_dir} is in object storage, where no SQLite CRM can live:"
                " set ETL_CRM_URL to the CRM database (postgresql://...)"
            )
        crm_url = f"sqlite:///{storage.join(data_dir, 'sources', 'crm.db')}"
    warehouse = (env.get("ETL_WAREHOUSE") or "delta").lower()
    if warehouse not in WAREHOUSE_KINDS:
        raise ValueError(f"ETL_WAREHOUSE={warehouse!r} is not one of {', '.join(WAREHOUSE_KINDS)}")
    return Settings(data_dir=data_dir, crm_url=crm_url, warehouse=warehouse)
