"""The linters and validators the deployment tests run, and where they live.

The Python-packaged ones (hadolint, actionlint, docker-compose: the `test` extra) are looked up beside this
interpreter first, so ``.venv/bin/pytest`` finds ``.venv/bin/hadolint`` without an activated venv; then on
PATH (kubectl comes from the system). A missing tool skips its test with the reason, except under CI=true,
where it fails: these checks must run there.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import IN_CI

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = DEPLOY / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
KUSTOMIZE = DEPLOY / "kubernetes"
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"


def tool(name: str, how: str) -> str:
    """The path of the executable ``name``; ``how`` says how to install it when it is missing."""
    beside = Path(sys.executable).parent / name
    found = str(beside) if beside.is_file() else shutil.which(name)
    if found is None:
        reason = f"{name} is not installed ({how})"
        if IN_CI:
            pytest.fail(f"{reason} (CI=true: the deployment checks must run, not skip)")
        pytest.skip(reason)
    return found


def run(command: list[str], cwd: Path = ROOT, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Exit status and the output (stdout and stderr together, colours off) of ``command``."""
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False)
    return done.returncode, done.stdout + done.stderr
