"""The dashboard's AutoML pages and export links over plain HTTP: a study started from the model page's
form runs, and its page shows the result, the leaderboard (each trial's job linked) and the chart's data;
a running study is followed by polling and cancelled by an editor, never by a viewer; another tenant
sees nothing; a bad form comes back naming the field; a version's export link downloads its bundle."""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sklearn.datasets import load_iris
from sqlalchemy.engine import Engine

from aiservice.bootstrap import Container
from aiservice.settings import Settings
from tests.conftest import Auth, make_settings
from tests.helpers import create_model, upload, wait_until
from tests.ui.conftest import HX, Login

API = "/api/v1/ai"
FINISHED = ("succeeded", "failed", "cancelled")


@pytest.fixture
def settings(engine: Engine, database_url: str, tmp_path: Path) -> Settings:
    """Two training jobs at once: a study's two trials run side by side."""
    return make_settings(database_url, tmp_path / "data", training_concurrency=2)


@pytest.fixture
def iris_csv(container: Container) -> Path:
    """scikit-learn's iris as a CSV under the dataset root (its label column: ``target``)."""
    root = container.settings.dataset_root_paths[0]
    root.mkdir(parents=True, exist_ok=True)
    frame = load_iris(as_frame=True).frame
    frame.columns = [c.replace(" (cm)", "").replace(" ", "_") for c in frame.columns]
    frame.to_csv(root / "iris.csv", index=False)
    return root / "iris.csv"


def form(dataset: Path | str, **fields: str) -> dict[str, str]:
    values = {
        "dataset": str(dataset),
        "target": "target",
        "task": "classification",
        "metric": "accuracy",
        "max_trials": "2",
    }
    return {**values, **fields}


def start(client: TestClient, data: dict[str, str], model: str = "flowers") -> str:
    """Send the start form; the study's id, from where the browser is sent."""
    response = client.post(f"/ui/models/{model}/automl", data=data, headers=HX)
    assert response.status_code == 204, response.text
    match = re.fullmatch(rf"/ui/models/{model}/automl/([0-9a-f-]{{36}})", response.headers["hx-redirect"])
    assert match is not None, response.headers["hx-redirect"]
    return match.group(1)


def chart_of(page: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(page.split('id="trials-data">', 1)[1].split("</script>", 1)[0])
    return data


def test_a_study_started_from_the_model_page_shows_its_result_leaderboard_and_chart(
    login: Login, auth: Auth, iris_csv: Path
) -> None:
    client = login("editor")
    create_model(client, auth(), "flowers")
    assert 'hx-get="/ui/models/flowers/automl"' in client.get("/ui/models/flowers").text
    section = client.get("/ui/models/flowers/automl", headers=HX)
    assert section.status_code == 200
    assert "No AutoML studies yet." in section.text and "Start a study" in section.text

    study_id = start(client, form(iris_csv))
    url = f"/ui/models/flowers/automl/{study_id}"
    study: dict[str, Any] = {}

    def ended() -> bool:
        nonlocal study
        study = client.get(f"{API}/models/flowers/automl/{study_id}", headers=auth()).json()
        return study["status"] in FINISHED

    wait_until(ended, 90, 0.2, lambda: f"the study to end, not {study}")
    assert study["status"] == "succeeded", study["error"]

    page = client.get(url)
    assert page.status_code == 200
    text = page.text
    assert 'id="study-status" class="status status-succeeded"' in text
    assert "every 2s" not in text and "Cancel study" not in text  # ended: no polling, nothing to cancel
    assert "2 trials" in text  # the budget
    verdict = "Beats the baseline" if study["beatsBaseline"] else "Does not beat the baseline"
    assert f'id="beats-baseline">{verdict}<' in text
    held_out, baseline = study["result"]["heldOut"]["accuracy"], study["result"]["baseline"]["accuracy"]
    assert f"{held_out:.4g}" in text and f"{baseline:.4g}" in text
    assert 'href="/ui/models/flowers#version-1">v1<' in text
    # The leaderboard: complete trials, best first, each linking its training job's page.
    board = text.split('id="leaderboard"', 1)[1].split("</table>", 1)[0]
    jobs = re.findall(r'href="/ui/jobs/([0-9a-f-]+)"', board)
    assert jobs == [t["jobId"] for t in study["leaderboard"]] and jobs
    job_page = client.get(f"/ui/jobs/{jobs[0]}")
    assert job_page.status_code == 200 and 'href="/ui/models/flowers"' in job_page.text
    # The chart: every trial in trial order, and the best so far never gets worse.
    chart = chart_of(text)
    trials = sorted(study["trials"], key=lambda t: t["number"])
    assert chart["labels"] == [f"#{t['number']}" for t in trials]
    assert chart["series"]["cvScore (accuracy)"] == [t["cvScore"] for t in trials]
    best = [b for b in chart["series"]["best so far"] if b is not None]
    assert best == sorted(best) and best[-1] == study["leaderboard"][0]["cvScore"]
    assert 'data-chart="trials-data"' in text and "<script>" not in text

    listed = client.get("/ui/models/flowers/automl", headers=HX).text
    row = listed.split(f'automl/{study_id}">', 1)[1].split("</tr>", 1)[0]
    assert "succeeded" in row and ">v1<" in row and "accuracy" in row
    assert f"{study['best']['cvScore']:.4g}" in row
    assert 'id="version-1"' in client.get("/ui/models/flowers").text  # where the version link lands

    # The jobs page tells trials from training jobs, and links each trial to its study.
    trials_only = client.get("/ui/jobs?kind=trial").text
    assert all(f"/ui/jobs/{job}" in trials_only for job in jobs)
    assert f'href="/ui/models/{study["modelId"]}/automl/{study_id}">(trial #' in trials_only
    training_only = client.get("/ui/jobs?kind=training").text
    assert not any(f"/ui/jobs/{job}" in training_only for job in jobs)
    assert client.get("/ui/jobs?kind=other").status_code == 422


def test_a_running_study_is_polled_and_cancelled_by_an_editor_but_not_by_a_viewer(
    login: Login, auth: Auth, iris_csv: Path
) -> None:
    client = login("editor")
    create_model(client, auth(), "flowers")
    study_id = start(client, form(iris_csv, max_trials="200"))
    url = f"/ui/models/flowers/automl/{study_id}"
    page = client.get(url).text
    assert 'hx-trigger="every 2s"' in page and "Cancel study" in page

    login("viewer")
    viewed = client.get(url)
    assert viewed.status_code == 200 and 'hx-trigger="every 2s"' in viewed.text
    assert "Cancel study" not in viewed.text
    assert "Start a study" not in client.get("/ui/models/flowers/automl", headers=HX).text
    refused = client.post("/ui/models/flowers/automl", data=form(iris_csv), headers=HX)
    assert refused.status_code == 403 and "training:write" in refused.text
    assert client.post(f"{url}/cancel", headers=HX).status_code == 403

    login("admin", tenant="globex")
    assert client.get(url).status_code == 404
    assert client.get(f"{url}/live", headers=HX).status_code == 404
    assert client.post(f"{url}/cancel", headers=HX).status_code == 404

    login("editor")
    assert client.post(f"{url}/cancel").status_code == 403  # not sent by the dashboard (no HX-Request)
    cancelled = client.post(f"{url}/cancel", headers=HX)
    assert cancelled.status_code == 204 and cancelled.headers["hx-redirect"] == url
    page = client.get(url).text
    assert 'class="status status-cancelled"' in page and "cancelled by alice" in page
    assert "every 2s" not in page and "Cancel study" not in page
    again = client.post(f"{url}/cancel", headers=HX)
    assert again.status_code == 409 and 'role="alert"' in again.text

    # The polled fragment: nothing to swap while the page's copy is current, else the new state.
    study = client.get(f"{API}/models/flowers/automl/{study_id}", headers=auth()).json()
    current: dict[str, str | int] = {"trials": len(study["trials"]), "status": "cancelled"}
    assert client.get(f"{url}/live", params=current, headers=HX).status_code == 204
    changed = client.get(f"{url}/live", params={"trials": 0, "status": "running"}, headers=HX)
    assert changed.status_code == 200 and "status-cancelled" in changed.text
    assert "every 2s" not in changed.text  # the swapped-in copy stops the polling


def test_a_bad_form_comes_back_naming_the_field_and_keeping_what_was_typed(
    login: Login, auth: Auth, iris_csv: Path, client: TestClient
) -> None:
    assert client.get("/ui/models/flowers/automl/anything", follow_redirects=False).status_code == 303
    login("editor")
    create_model(client, auth(), "flowers")
    cases = [
        (form(iris_csv, task="regression"), "metric", "is not a regression metric"),
        (form(iris_csv, max_trials="many"), "max_trials", "not a whole number"),
        (form(iris_csv, max_trials="0"), "max_trials", "must be from 1"),
        (form("/nowhere/data.csv"), "dataset", ""),
        (form(""), "dataset", "give a path or dataset://NAME"),
        (form(iris_csv, target="t" * 201), "target", "at most 200 characters"),
    ]
    for data, field, message in cases:
        response = client.post("/ui/models/flowers/automl", data=data, headers=HX)
        assert response.status_code == 422, (data, response.text)
        text = response.text
        assert 'role="alert"' in text and "<form" in text  # the form again, with the problem
        error = text.split(f'id="automl-{field}-error">', 1)[1].split("</p>", 1)[0]
        assert message in error, (field, error)
        assert f'aria-describedby="automl-{field}-error"' in text
        assert f'value="{data["dataset"]}"' in text  # what was typed stays
    assert client.get(f"{API}/models/flowers/automl", headers=auth()).json()["items"] == []
    missing = client.post("/ui/models/ghost/automl", data=form(iris_csv), headers=HX)
    assert missing.status_code == 404 and 'role="alert"' in missing.text
    assert client.get("/ui/models/flowers/automl/not-a-study").status_code == 404
    assert client.get("/ui/models/flowers/automl/x/live?trials=-1", headers=HX).status_code == 422


def test_a_versions_export_link_downloads_its_bundle(login: Login, auth: Auth) -> None:
    client = login("viewer")
    create_model(client, auth(), "iris")
    assert upload(client, auth(), "iris").status_code == 201
    page = client.get("/ui/models/iris").text
    link = "/ui/models/iris/versions/1/export?format=onnx"
    assert f'href="{link}"' in page
    assert "format=torchscript" not in page and "format=tflite" not in page  # not for sklearn
    response = client.get(link)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    assert 'filename="iris-v1-onnx.zip"' in response.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(response.content)) as archive:
        assert {"model.onnx", "schema.json", "README.md", "run.py"} <= set(archive.namelist())
    wrong = client.get("/ui/models/iris/versions/1/export?format=tflite")
    assert wrong.status_code == 422 and "query.format" in wrong.text and "<h1>" in wrong.text
    assert client.get("/ui/models/iris/versions/9/export").status_code == 404
    assert client.get("/ui/models/iris/versions/nine/export").status_code == 422
