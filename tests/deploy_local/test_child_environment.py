"""``Settings.child_environment``: a replica started with it reads the settings its service runs with,
even those that came from arguments rather than the environment."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aiservice.settings import Settings


def test_settings_given_as_arguments_reach_the_child(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None,
        database_url="sqlite:///x.db",
        data_dir=tmp_path,
        jwt_secret="s" * 40,
        onnx_compile=False,
        tenant_default_quotas={"maxModels": 3},
    )
    env = settings.child_environment()
    assert env["DATABASE_URL"] == "sqlite:///x.db"
    assert env["DATA_DIR"] == str(tmp_path)
    assert env["JWT_SECRET"] == "s" * 40  # the secret's value, not its mask
    assert env["ONNX_COMPILE"] == "false"
    assert json.loads(env["TENANT_DEFAULT_QUOTAS"]) == {"maxModels": 3}
    for name in ("DATABASE_URL", "DATA_DIR", "JWT_SECRET", "ONNX_COMPILE", "TENANT_DEFAULT_QUOTAS"):
        monkeypatch.setenv(name, env[name])
    reread = Settings(_env_file=None)  # type: ignore[call-arg]
    assert reread.model_dump() == settings.model_dump()


def test_overrides_win_and_none_removes_a_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", "/somewhere")
    monkeypatch.setenv("WORKERS", "4")
    env = Settings(_env_file=None).child_environment(WORKERS="1", PROMETHEUS_MULTIPROC_DIR=None)  # type: ignore[call-arg]
    assert env["WORKERS"] == "1"
    assert "PROMETHEUS_MULTIPROC_DIR" not in env
