"""Configuration from the environment (DESIGN.md, "Configuration")."""

from pathlib import Path

import pytest

from etl_assets.settings import load_settings


def test_defaults_run_on_the_embedded_sample(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load_settings({})
    assert settings.data_dir == tmp_path / "data"
    assert settings.crm_url == f"sqlite:///{tmp_path / 'data' / 'sources' / 'crm.db'}"
    assert settings.warehouse == "delta"
    assert settings.warehouse_dir == tmp_path / "data" / "warehouse"


def test_variables_override_the_defaults(tmp_path):
    settings = load_settings(
        {"ETL_DATA_DIR": str(tmp_path), "ETL_CRM_URL": "postgresql://u@h/db", "ETL_WAREHOUSE": "Delta"}
    )
    assert settings.data_dir == Path(tmp_path)
    assert settings.crm_url == "postgresql://u@h/db"
    assert settings.warehouse == "delta"


def test_unknown_warehouse_is_refused_by_name():
    with pytest.raises(ValueError, match="ETL_WAREHOUSE='duckdb' is not one of delta, snowflake, bigquery"):
        load_settings({"ETL_WAREHOUSE": "duckdb"})
