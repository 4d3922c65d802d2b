"""Configuration from the environment (DESIGN.md, "Configuration")."""

import pytest

from etl_assets.settings import load_settings


def test_defaults_run_on_the_embedded_sample(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    settings = load_settings({})
    assert settings.data_dir == str(tmp_path.resolve() / "data")
    assert settings.crm_url == f"sqlite:///{tmp_path.resolve() / 'data' / 'sources' / 'crm.db'}"
    assert settings.warehouse == "delta"
    assert settings.warehouse_dir == str(tmp_path.resolve() / "data" / "warehouse")


def test_variables_override_the_defaults(tmp_path):
    settings = load_settings(
        {"ETL_DATA_DIR": str(tmp_path), "ETL_CRM_URL": "postgresql://u@h/db", "ETL_WAREHOUSE": "Delta"}
    )
    assert settings.data_dir == str(tmp_path.resolve())
    assert settings.crm_url == "postgresql://u@h/db"
    assert settings.warehouse == "delta"


def test_unknown_warehouse_is_refused_by_name():
    with pytest.raises(ValueError, match="ETL_WAREHOUSE='duckdb' is not one of delta, snowflake, bigquery"):
        load_settings({"ETL_WAREHOUSE": "duckdb"})


def test_object_storage_data_dir_is_kept_as_a_uri_and_needs_a_crm_url():
    settings = load_settings({"ETL_DATA_DIR": "s3://bucket/etl", "ETL_CRM_URL": "postgresql://u@h/db"})
    assert settings.data_dir == "s3://bucket/etl"
    assert settings.warehouse_dir == "s3://bucket/etl/warehouse"
    with pytest.raises(ValueError, match="ETL_DATA_DIR=s3://bucket/etl is in object storage.*ETL_CRM_URL"):
        load_settings({"ETL_DATA_DIR": "s3://bucket/etl"})
