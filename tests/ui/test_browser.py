"""The dashboard in headless Chromium against the service on a real socket, with seeded data: what a person
does in a browser (log in, create a model, upload a version, predict from the form, watch a training job's
chart grow, read an experiment's verdict) and what a role does not see. Each main page is saved as a
screenshot under test-artifacts/ui/ (and, with UI_DOCS_SCREENSHOTS=1, the README's under docs/screenshots/).

The browser tests run on SQLite only: the pages are the same over either database, which the plain HTTP
tests and the API's own suites cover."""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sklearn.datasets import load_iris

from aiservice.bootstrap import Container
from aiservice.domain.training import JobFailure
from tests.experiments.conftest import observe
from tests.helpers import iris_model_bytes, serve_in_thread, wait_until
from tests.monitoring.test_drift_api import iris_rows
from tests.ui.conftest import screenshot

API = "/api/v1/ai"
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
SCHEMA = {"type": "tabular", "features": [{"name": n, "type": "number"} for n in FEATURES]}


@pytest.fixture
def database_url(sqlite_database: str) -> str:
    """SQLite only (see the module's docstring)."""
    return sqlite_database


@pytest.fixture
def live(container: Container) -> Iterator[str]:
    """The app on a real socket; its container is not started, so no job runner takes a queued job: the
    training test plays the worker's part itself."""
    with serve_in_thread(container) as address:
        yield f"http://{address}"


@pytest.fixture
def api(live: str, container: Container) -> Iterator[Callable[..., httpx.Response]]:
    """Calls to the live API as an admin of acme, for seeding."""
    token = container.tokens.issue("seeder", "acme", ["admin"], 3600)
    with httpx.Client(
        base_url=live, headers={"Authorization": f"Bearer {token}", "X-Tenant-ID": "acme"}, timeout=30
    ) as http:

        def call(method: str, path: str, **kwargs: Any) -> httpx.Response:
            return http.request(method, f"{API}{path}", **kwargs)

        yield call


def log_in(page: Any, live: str, container: Container, *roles: str, subject: str = "alice") -> None:
    page.goto(f"{live}/ui/models")
    assert page.url.endswith("/ui/login")  # sent to the login form first
    page.get_by_label("Token").fill(container.tokens.issue(subject, "acme", list(roles), 3600))
    page.get_by_label("Tenant").fill("acme")
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(f"{live}/ui/models")


def named(rows: list[dict[str, Any]]) -> list[dict[str, float]]:
    return [dict(zip(FEATURES, row["features"], strict=True)) for row in rows]


def seed_iris(api: Callable[..., httpx.Response], versions: int = 1) -> None:
    created = api("POST", "/models", json={"name": "iris", "framework": "sklearn", "inputSchema": SCHEMA})
    assert created.status_code == 201, created.text
    for kind in ["logistic", "forest"][:versions]:
        files = {"file": ("model.skops", iris_model_bytes(kind), "application/octet-stream")}
        assert api("POST", "/models/iris/versions", files=files).status_code == 201


def test_log_in_create_a_model_upload_a_version_and_predict(
    page: Any, live: str, container: Container, tmp_path: Path
) -> None:
    page.goto(f"{live}/ui/models")
    page.wait_for_url(f"{live}/ui/login")
    screenshot(page, "login")
    # By keyboard alone: the first Tab reaches the skip link, then the token, the tenant, Enter submits.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Tab")
    page.keyboard.type(container.tokens.issue("alice", "acme", ["editor"], 3600))
    page.keyboard.press("Tab")
    page.keyboard.type("acme")
    page.keyboard.press("Enter")
    page.wait_for_url(f"{live}/ui/models")

    form = page.get_by_role("region", name="Create a model")
    form.get_by_label("Name", exact=True).fill("iris")
    form.get_by_label("Framework").select_option("sklearn")
    form.get_by_label("Category").fill("classification")
    form.get_by_label("Tags").fill("flowers, demo")
    form.get_by_label("Input features").fill(", ".join(f"{n}:number" for n in FEATURES))
    form.get_by_role("button", name="Create model").click()
    page.wait_for_url(f"{live}/ui/models/iris")
    assert page.get_by_role("heading", level=1).inner_text() == "iris"
    assert "No versions yet." in page.content()

    artifact = tmp_path / "model.skops"
    artifact.write_bytes(iris_model_bytes())
    upload = page.get_by_role("region", name="Upload a version")
    upload.get_by_label("Metadata").fill('{"description": "logistic", "metrics": {"accuracy": 0.97}}')
    upload.get_by_label("Artifact file").set_input_files(str(artifact))
    upload.get_by_role("button", name="Upload").click()
    versions = page.locator("#versions")
    versions.wait_for()
    assert "v1" in versions.inner_text() and "0.97" in versions.inner_text()

    try_it = page.get_by_role("region", name="Try it")
    for name, value in zip(FEATURES, ["6.7", "3.0", "5.2", "2.3"], strict=True):
        try_it.get_by_label(name).fill(value)
    try_it.get_by_role("button", name="Predict").click()
    prediction = page.locator("#prediction-value")
    prediction.wait_for()
    assert prediction.inner_text() == "2"  # virginica
    assert "Confidence" in page.locator("#prediction").inner_text()
    screenshot(page, "model", docs=True)
    page.set_viewport_size({"width": 390, "height": 844})  # a phone: nothing wider than the screen
    page.wait_for_function(
        "() => document.documentElement.scrollWidth <= window.innerWidth"
    )  # charts resize too
    screenshot(page, "model-narrow")
    page.set_viewport_size({"width": 1200, "height": 800})

    page.get_by_role("navigation", name="Main").get_by_role("link", name="Models").click()
    page.wait_for_url(f"{live}/ui/models")
    assert page.get_by_role("link", name="iris").is_visible()
    filters = page.get_by_role("search", name="Filter models")
    filters.get_by_label("Tag", exact=True).fill("nothing-has-this")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r".*/ui/models\?.*tag=nothing-has-this.*"))
    assert "No models match." in page.content()
    filters.get_by_label("Tag", exact=True).fill("demo")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url(re.compile(r".*tag=demo.*"))
    assert page.get_by_role("link", name="iris").is_visible()
    screenshot(page, "models", docs=True)


def test_a_training_jobs_chart_grows_as_the_job_reports_progress(
    page: Any, live: str, container: Container, api: Callable[..., httpx.Response]
) -> None:
    seed_iris(api)
    root = container.settings.dataset_root_paths[0]
    root.mkdir(parents=True, exist_ok=True)
    x, y = load_iris(return_X_y=True)
    with (root / "iris.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*FEATURES, "species"])
        writer.writerows([*row, int(label)] for row, label in zip(x.tolist(), y.tolist(), strict=True))
    body = {
        "trainingConfig": {"algorithm": "sklearn.linear_model.LogisticRegression", "epochs": 3},
        "datasetConfig": {"trainPath": str(root / "iris.csv"), "format": "csv", "target": "species"},
    }
    submitted = api("POST", "/models/iris/train", json=body)
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]

    log_in(page, live, container, "viewer")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Training").click()
    page.wait_for_url(f"{live}/ui/jobs")
    assert "queued" in page.locator("table").inner_text()
    screenshot(page, "jobs")
    page.get_by_role("link", name=job_id[:12]).click()
    page.wait_for_url(f"{live}/ui/jobs/{job_id}")
    chart = page.locator("#job-chart")
    assert chart.get_attribute("data-points") == "0"

    # The worker's side of the job, as a runner drives it: claimed, then one report per epoch.
    execution = container.training_runner._execution
    order = execution.claim("browser-test")
    assert order is not None and order.job.id == job_id
    page.locator("#job-status", has_text="running").wait_for()
    for epoch, loss in enumerate([0.9, 0.5, 0.3], start=1):
        execution.progress(
            "acme", job_id, {"epoch": epoch, "epochs": 3, "metrics": {"loss": loss, "accuracy": 1 - loss / 2}}
        )
        wait_until(lambda e=epoch: chart.get_attribute("data-points") == str(e), 15, 0.1, f"point {epoch}")
    assert "Epoch 3 of 3" in page.locator("#job-latest").inner_text()
    screenshot(page, "job", docs=True)
    execution.fail("acme", job_id, JobFailure("training", "stopped by the test"))
    page.locator("#job-status", has_text="failed").wait_for()


def test_an_experiments_results_show_each_arm_and_the_verdict(
    page: Any, live: str, container: Container, api: Callable[..., httpx.Response]
) -> None:
    seed_iris(api, versions=2)
    assert api("PUT", "/models/iris/aliases/champion", json={"version": 1}).status_code == 200
    experiment = api(
        "POST",
        "/experiments",
        json={
            "name": "forest-vs-logistic",
            "model": "iris",
            "mode": "ab",
            "arms": [
                {"name": "A", "alias": "champion", "weight": 1},
                {"name": "B", "version": 2, "weight": 1},
            ],
            "champion": "A",
        },
    )
    assert experiment.status_code == 201, experiment.text
    experiment_id = experiment.json()["id"]
    assert api("POST", f"/experiments/{experiment_id}/start").status_code == 200
    observe(container, experiment_id, "A", 40, errors=2, latency_ms=4.0)
    observe(container, experiment_id, "B", 40, errors=0, latency_ms=9.0)
    verdict = api("GET", f"/experiments/{experiment_id}/results").json()["verdict"]["verdict"]

    log_in(page, live, container, "viewer")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Experiments").click()
    page.get_by_role("link", name="forest-vs-logistic").click()
    page.wait_for_url(f"{live}/ui/experiments/{experiment_id}")
    assert page.locator("#verdict-text").inner_text() == verdict
    arms = page.locator("#arms").inner_text()
    assert re.search(r"A\s+champion", arms) and "40" in arms and "5.0%" in arms
    assert page.locator("canvas[data-chart='arms-data']").get_attribute("data-drawn") == "1"
    screenshot(page, "experiment", docs=True)
    page.goto(f"{live}/ui/experiments")
    screenshot(page, "experiments")


def test_an_editor_does_not_see_the_audit_log_and_an_admin_does(
    page: Any, live: str, container: Container, api: Callable[..., httpx.Response]
) -> None:
    seed_iris(api)
    logging = {"enabled": True, "sampleRate": 1.0}
    assert api("PUT", "/models/iris/payload-logging", json=logging).status_code == 200
    reference = {"rows": named(iris_rows(1000, seed=0))}
    assert api("PUT", "/models/iris/versions/1/reference-profile", json=reference).status_code == 200
    shifted = {"inputs": named(iris_rows(600, seed=1, shift={2: 1.5}))}
    assert api("POST", "/models/iris/batch-predict", json=shifted).status_code == 200
    container.payload_logging.recorder.flush()
    assert api("POST", "/models/iris/drift").json()["verdict"] == "drift"

    log_in(page, live, container, "editor", subject="eddie")
    navigation = page.get_by_role("navigation", name="Main")
    assert navigation.get_by_role("link", name="Models").is_visible()
    assert navigation.get_by_role("link", name="Audit log").count() == 0
    refused = page.goto(f"{live}/ui/audit")
    assert refused is not None and refused.status == 403
    page.goto(f"{live}/ui/deployments")
    screenshot(page, "deployments")
    page.goto(f"{live}/ui/models/iris/drift")
    assert page.get_by_role("heading", level=1).inner_text() == "Drift of iris"
    assert "Latest report: drift" in page.locator("main").inner_text()
    assert page.locator("canvas[data-chart='drift-data']").get_attribute("data-drawn") == "1"
    screenshot(page, "drift", docs=True)

    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(f"{live}/ui/login")
    log_in(page, live, container, "admin", subject="ada")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Audit log").click()
    page.wait_for_url(f"{live}/ui/audit")
    records = page.locator("#audit").inner_text()
    assert "model.create" in records and "seeder" in records
    screenshot(page, "audit")


def test_a_study_started_from_the_form_is_followed_until_its_leaderboard_and_chart_show(
    page: Any, live: str, container: Container, api: Callable[..., httpx.Response], client: Any
) -> None:
    """``client`` starts the container's background work (the job runner), which runs the trials."""
    seed_iris(api)
    root = container.settings.dataset_root_paths[0]
    root.mkdir(parents=True, exist_ok=True)
    frame = load_iris(as_frame=True).frame
    frame.columns = [*FEATURES, "species"]
    frame.to_csv(root / "flowers.csv", index=False)

    log_in(page, live, container, "editor")
    page.goto(f"{live}/ui/models/iris")
    assert "No AutoML studies yet." in page.locator("#automl").inner_text()
    start = page.get_by_role("region", name="Start a study")
    start.get_by_label("Dataset").fill(str(root / "flowers.csv"))
    start.get_by_label("Target column").fill("species")
    start.get_by_label("Max trials").fill("2")
    start.get_by_role("button", name="Start study").click()
    page.wait_for_url(re.compile(rf"{live}/ui/models/iris/automl/[0-9a-f-]{{36}}"))
    # The page polls while the study runs, and stops once its status says it has ended.
    page.locator("#study-status", has_text="succeeded").wait_for(timeout=90_000)
    board = page.locator("#leaderboard")
    assert board.locator("tbody tr").count() >= 1
    assert board.get_by_role("link").first.get_attribute("href").startswith("/ui/jobs/")
    assert page.locator("canvas[data-chart='trials-data']").get_attribute("data-drawn") == "1"
    assert page.locator("#beats-baseline").is_visible()
    assert page.get_by_role("button", name="Cancel study").count() == 0
    screenshot(page, "automl-study")
    page.get_by_role("link", name="v2").click()  # the version it registered, after the seeded one
    page.wait_for_url(f"{live}/ui/models/iris#version-2")
    assert page.get_by_role("link", name="Export v2 as onnx").is_visible()
