"""Shadow traffic stays off the caller's path: with a challenger made slow (its model sleeps in every
predict, as a heavy model would), the caller's answers are the champion's and the caller's median
latency stays within a generous bound of the median without the experiment. A behaviour test of
"off the caller's path", not a benchmark: the bound is wide, the challenger's delay much wider."""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from aiservice.application.ports import Prediction
from aiservice.application.serving.routing import Route
from aiservice.bootstrap import Container
from tests.conftest import Auth
from tests.experiments.conftest import API, ROWS, results, started
from tests.helpers import wait_until

CHALLENGER_DELAY_S = 0.1  # each of the challenger's model calls
BOUND_MS = 20.0  # the caller's median may grow by this much at most
CALLS = 40


class SlowModel:
    """A loaded model whose every predict sleeps first: a slow challenger."""

    def __init__(self, loaded: Any, seconds: float) -> None:
        self._loaded = loaded
        self._seconds = seconds

    def predict(self, rows: np.ndarray) -> Prediction:
        time.sleep(self._seconds)
        prediction: Prediction = self._loaded.predict(rows)
        return prediction

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loaded, name)


@pytest.fixture
def slow_challenger(container: Container, monkeypatch: pytest.MonkeyPatch) -> None:
    """Version 2 is served through ``SlowModel``: injected where the container's loader builds a
    loaded version's serving parts, with the warm-up time a slow model would have measured."""
    loader = container.inference.loader
    build = loader.serving_model

    def serving_model(route: Route, loaded: Any, call_s: float | None = None) -> Any:
        if route.version.version == 2:
            return build(route, SlowModel(loaded, CHALLENGER_DELAY_S), CHALLENGER_DELAY_S)
        return build(route, loaded, call_s)

    monkeypatch.setattr(loader, "serving_model", serving_model)


def predict(client: TestClient, auth: Auth, row: list[float], **options: Any) -> tuple[Any, float]:
    body: dict[str, Any] = {"input": {"features": row}}
    if options:
        body["options"] = options
    started_at = time.perf_counter()
    response = client.post(f"{API}/models/iris/predict", json=body, headers=auth("predictor"))
    elapsed_ms = (time.perf_counter() - started_at) * 1000
    assert response.status_code == 200, response.text
    return response.json(), elapsed_ms


def median_ms(client: TestClient, auth: Auth) -> tuple[float, list[Any]]:
    timings, answers = [], []
    for i in range(CALLS):
        answer, elapsed = predict(client, auth, ROWS[i % len(ROWS)])
        timings.append(elapsed)
        answers.append(answer)
    return statistics.median(timings), answers


def test_a_slow_shadow_challenger_changes_neither_the_answer_nor_the_callers_latency(
    client: TestClient, auth: Auth, container: Container, iris: str, slow_challenger: None
) -> None:
    for row in ROWS:  # both versions loaded and warm before anything is timed
        predict(client, auth, row)
        predict(client, auth, row, version=2)
    without, _ = median_ms(client, auth)
    champion = [predict(client, auth, row, version=1)[0]["prediction"] for row in ROWS]

    experiment = started(client, auth, mode="shadow", routingKey=None)
    with_shadow, answers = median_ms(client, auth)

    assert all(a["experiment"]["arm"] == "A" and a["version"] == 1 for a in answers)
    assert [a["prediction"] for a in answers] == [champion[i % len(ROWS)] for i in range(CALLS)]
    assert with_shadow <= without + BOUND_MS, (with_shadow, without)

    def challenger_seen() -> dict[str, Any] | None:
        container.experiments.recorder.flush()
        arms = {a["arm"]: a for a in results(client, auth, experiment["id"])["arms"]}
        return arms["B"] if arms["B"]["shadowRequests"] > 0 else None

    challenger = wait_until(challenger_seen, what="the slow challenger's shadow observations")
    # the challenger really was slow: the caller's median did not wait for it
    assert challenger["latencyMs"]["p50"] >= CHALLENGER_DELAY_S * 1000
    assert with_shadow < CHALLENGER_DELAY_S * 1000
