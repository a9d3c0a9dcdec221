"""``aiservice token create`` signs with the server's secret or not at all, and says which it used."""

from __future__ import annotations

from pathlib import Path

import jwt
import pytest
from typer.testing import CliRunner, Result

from aiservice.interfaces.cli.main import app as cli

CREATE = ["token", "create", "--tenant", "default", "--role", "viewer"]


@pytest.fixture(autouse=True)
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder of the user's own, with no .env and none of the server's settings."""
    monkeypatch.chdir(tmp_path)
    for name in ("JWT_SECRET", "DATA_DIR", "ENVIRONMENT"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def create(**env: str) -> Result:
    return CliRunner().invoke(cli, CREATE, env=env)


def test_without_a_secret_it_names_the_file_it_looked_for_and_creates_none(elsewhere: Path) -> None:
    result = create()
    secret_file = elsewhere / "var" / "jwt_secret"
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr.count("\n") == 1
    assert str(secret_file) in result.stderr and "DATA_DIR" in result.stderr and "JWT_SECRET" in result.stderr
    assert not secret_file.exists()


def test_it_signs_with_the_servers_secret_file_and_says_so(elsewhere: Path) -> None:
    server_data = elsewhere / "server" / "var"
    server_data.mkdir(parents=True)
    (server_data / "jwt_secret").write_text("the-servers-own-secret-of-enough-length-for-hs256\n")
    result = create(DATA_DIR=str(server_data))
    assert result.exit_code == 0, result.output
    assert result.stderr == f"signed with the secret in {server_data / 'jwt_secret'}\n"
    token = result.stdout.strip()
    assert result.stdout == token + "\n"
    claims = jwt.decode(token, "the-servers-own-secret-of-enough-length-for-hs256", algorithms=["HS256"])
    assert claims["tenant"] == "default"


def test_it_says_when_it_signs_with_jwt_secret() -> None:
    result = create(JWT_SECRET="a-secret-set-in-the-environment-long-enough")
    assert (result.exit_code, result.stderr) == (0, "signed with JWT_SECRET\n")
