"""Configuration read from the environment (DESIGN.md, "Configuration").

Every variable is optional; the defaults run the whole platform on one laptop against the
embedded sample under ``./data``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

WAREHOUSE_KINDS = ("delta", "snowflake", "bigquery")


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    crm_url: str
    warehouse: str

    @property
    def warehouse_dir(self) -> Path:
        return self.data_dir / "warehouse"


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    """Read ``ETL_DATA_DIR``, ``ETL_CRM_URL`` and ``ETL_WAREHOUSE`` (each optional)."""
    env = os.environ if environ is None else environ
    data_dir = Path(env.get("ETL_DATA_DIR") or "./data").resolve()
    crm_url = env.get("ETL_CRM_URL") or f"sqlite:///{data_dir / 'sources' / 'crm.db'}"
    warehouse = (env.get("ETL_WAREHOUSE") or "delta").lower()
    if warehouse not in WAREHOUSE_KINDS:
        raise ValueError(f"ETL_WAREHOUSE={warehouse!r} is not one of {', '.join(WAREHOUSE_KINDS)}")
    return Settings(data_dir=data_dir, crm_url=crm_url, warehouse=warehouse)
