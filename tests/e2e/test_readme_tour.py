"""The README's five-minute tour, pasted as is into bash against a live server, must work."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.conftest import LiveServer

pytestmark = pytest.mark.e2e

README = Path(__file__).resolve().parents[2] / "README.md"


def paste_block(live_server: LiveServer, name: str, timeout: float) -> str:
    """Run the README's ``<!-- name:start -->`` bash block as a user pastes it after `make run`;
    returns what it printed."""
    text = README.read_text()
    block = re.search(rf"<!-- {name}:start -->\s*```bash\n(.*?)```\s*<!-- {name}:end -->", text, re.S)
    assert block is not None, f"README has no {name} block"
    token = live_server.line_starting("export TOKEN=").removeprefix("export TOKEN=")
    script = (
        block.group(1)
        .replace("localhost:3004", f"localhost:{live_server.port}")
        .replace(".venv/bin/python", sys.executable)
    )
    result = subprocess.run(
        ["bash", "-e", "-c", f"export TOKEN={token}\n{script}"],
        cwd=live_server.folder,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_readme_tour_works_when_pasted(live_server: LiveServer) -> None:
    stdout = paste_block(live_server, "tour", timeout=60)
    assert stdout.rstrip().endswith("downloaded bytes match")
    documents = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    assert len(documents) == 9  # one JSON document per call, each on its own line
    resolved = next(d for d in documents if d.get("reference") == "iris@champion")
    assert resolved["version"]["version"] == 1
    assert resolved["version"]["stage"] == "production"
    predicted = next(d for d in documents if "prediction" in d)
    assert predicted["prediction"] == "virginica"
    assert predicted["featureImportance"]["method"] == "coefficient-x-value"
    v2 = next(d for d in documents if d.get("model_name") == "iris")
    assert {o["name"]: o["data"] for o in v2["outputs"]}["label"] == ["virginica"]
    batch = next(d for d in documents if "outputs" in d and "model_name" not in d)["outputs"]
    assert batch[0]["prediction"] == "setosa"
    assert batch[1]["error"]["errors"] == [{"field": "inputs.1.petal_width", "message": "required"}]

    # The API-key example in Security continues from the tour's iris: a key, then a prediction with it.
    stdout = paste_block(live_server, "api-keys", timeout=60)
    predicted = json.loads(stdout)
    assert (predicted["modelId"], predicted["prediction"]) == (resolved["model"]["id"], "setosa")


def test_readme_training_walk_through_works_when_pasted(live_server: LiveServer) -> None:
    stdout = paste_block(live_server, "training", timeout=180)
    events = [line.removeprefix("event: ") for line in stdout.splitlines() if line.startswith("event: ")]
    assert events[0] == "status" and "progress" in events
    documents = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    job = next(d for d in documents if "trainingConfig" in d)
    assert job["status"] == "succeeded", job
    assert job["version"] == 1
    assert job["metrics"]["validation_accuracy"] > 0.8
    predicted = next(d for d in documents if "prediction" in d)
    assert predicted["prediction"] == "virginica"

    # The upload part continues from there: upload, list, train on dataset://iris, delete.
    stdout = paste_block(live_server, "datasets", timeout=180)
    documents = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    assert documents[0]["uri"] == "dataset://iris"
    assert [d["name"] for d in documents[1]["items"]] == ["iris"]
    status = next(line for line in stdout.splitlines() if line.startswith("data: ") and "status" in line)
    assert json.loads(status.removeprefix("data: "))["status"] == "succeeded"
    assert stdout.rstrip().endswith("204")


def test_readme_deployments_work_when_pasted_after_the_tour(live_server: LiveServer) -> None:
    paste_block(live_server, "tour", timeout=60)
    stdout = paste_block(live_server, "deployments", timeout=240)
    assert stdout.rstrip().endswith("deleted")
    documents = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    created = documents[0]
    assert (created["status"], created["replicas"]["desired"], created["revision"]["reference"]) == (
        "pending",
        2,
        "production",
    )
    predicted = next(d for d in documents if "prediction" in d)
    assert predicted["prediction"] == "virginica"
    shown = next(d for d in documents if d.get("serving", {}) and d["serving"].get("revision") == 3)
    assert shown["serving"]["version"] == 1 and shown["previous"]["version"] == 2
    types = [e["type"] for e in shown["events"]]
    assert types[0] == "ai.deployment.created.v1" and types[-1] == "ai.deployment.rolled_back.v1"
    listed = next(d for d in documents if "items" in d)
    assert [d["name"] for d in listed["items"]] == ["my-classifier-prod"]
