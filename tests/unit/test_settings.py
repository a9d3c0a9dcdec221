"""Settings: one class, documented in .env.example, with the database chosen by precedence."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from aiservice.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def settings(**values: object) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_env_example_lists_every_setting() -> None:
    documented = set(re.findall(r"^([A-Z0-9_]+)=", (ROOT / ".env.example").read_text(), re.M))
    assert documented == {name.upper() for name in Settings.model_fields}


def test_sqlite_under_data_dir_by_default(tmp_path: Path) -> None:
    assert settings(data_dir=tmp_path).resolved_database_url == f"sqlite:///{tmp_path.resolve()}/aiservice.db"


def test_db_host_selects_postgresql_with_quoted_credentials() -> None:
    url = settings(
        db_host="db.internal", db_user="svc", db_password="p@ss:word/1", db_name="reg"
    ).resolved_database_url
    assert url == "postgresql+psycopg://svc:p%40ss%3Aword%2F1@db.internal:5432/reg"


def test_database_url_wins_over_db_parts() -> None:
    assert settings(database_url="sqlite:///x.db", db_host="db").resolved_database_url == "sqlite:///x.db"


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "8123")
    monkeypatch.setenv("MAX_ARTIFACT_BYTES", "1000")
    loaded = settings()
    assert (loaded.port, loaded.max_artifact_bytes) == (8123, 1000)


def test_artifacts_default_under_data_dir(tmp_path: Path) -> None:
    assert settings(data_dir=tmp_path).artifact_path == tmp_path / "artifacts"
    assert settings(data_dir=tmp_path, artifact_root="/srv/a").artifact_path == Path("/srv/a")
