"""Experiments on the Open Inference Protocol (KServe v2) path: ``POST /v2/models/{name}/infer`` of a
bare model is routed by its running experiment like ``/predict`` (sticky by header or by an input
tensor's first row), names the arm in the response's ``parameters`` and answers with the arm's version;
a version-pinned call is never routed; shadow copies leave the answer alone; results count v2 calls,
JSON and binary alike."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from fastapi.testclient import TestClient

from aiservice.bootstrap import Container
from tests.conftest import Auth
from tests.experiments.conftest import ROWS, results, started
from tests.helpers import wait_until

V2 = "/v2/models/iris"
HEADER = "Inference-Header-Content-Length"


def v2_body(rows: list[list[float]]) -> dict[str, Any]:
    return {"inputs": [{"name": "input", "shape": [len(rows), 4], "datatype": "FP32", "data": rows}]}


def infer(
    client: TestClient, auth: Auth, rows: list[list[float]], path: str = f"{V2}/infer", **headers: str
) -> dict[str, Any]:
    extra = {k.replace("_", "-"): v for k, v in headers.items()}
    response = client.post(path, json=v2_body(rows), headers={**auth("predictor"), **extra})
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def labels(answer: dict[str, Any]) -> list[Any]:
    return next(o["data"] for o in answer["outputs"] if o["name"] == "label")


def binary_infer(client: TestClient, auth: Auth, rows: list[list[float]], **headers: str) -> dict[str, Any]:
    """A binary-tensor request and a binary response; the response's JSON header."""
    raw = np.asarray(rows, dtype="<f4").tobytes()
    request = {
        "inputs": [
            {
                "name": "input",
                "shape": [len(rows), 4],
                "datatype": "FP32",
                "parameters": {"binary_data_size": len(raw)},
            }
        ],
        "parameters": {"binary_data_output": True},
    }
    header = json.dumps(request).encode()
    extra = {k.replace("_", "-"): v for k, v in headers.items()}
    response = client.post(
        f"{V2}/infer",
        content=header + raw,
        headers={
            **auth("predictor"),
            **extra,
            HEADER: str(len(header)),
            "Content-Type": "application/octet-stream",
        },
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/octet-stream"
    meta: dict[str, Any] = json.loads(response.content[: int(response.headers[HEADER])])
    return meta


def test_a_v2_call_is_routed_sticky_by_header_and_names_the_arm_and_its_version(
    client: TestClient, auth: Auth, iris: str
) -> None:
    experiment = started(client, auth)
    arms = set()
    for user in range(40):
        first = infer(client, auth, [ROWS[0]], X_User_Id=f"user-{user}")
        again = infer(client, auth, [ROWS[0]], X_User_Id=f"user-{user}")
        parameters = first["parameters"]
        assert parameters["experiment"] == experiment["id"]
        assert again["parameters"]["arm"] == parameters["arm"]
        assert first["model_version"] == ("1" if parameters["arm"] == "A" else "2")
        arms.add(parameters["arm"])
    assert arms == {"A", "B"}


def test_an_input_tensor_may_be_the_routing_key_and_a_batch_follows_its_first_row(
    client: TestClient, auth: Auth, iris: str
) -> None:
    started(client, auth, routingKey={"input": "input"})
    rows = [[4.5 + i / 10, 3.0, 1.4, 0.2] for i in range(24)]
    by_row = [infer(client, auth, [row])["parameters"]["arm"] for row in rows]
    assert set(by_row) == {"A", "B"}  # 24 keys split by weight (one arm for all: odds 2**-23)
    assert [infer(client, auth, [row])["parameters"]["arm"] for row in rows] == by_row
    for i, row in enumerate(rows[:6]):
        batch = infer(client, auth, [row, *ROWS])
        assert batch["parameters"]["arm"] == by_row[i]


def test_a_call_naming_a_version_is_never_routed(client: TestClient, auth: Auth, iris: str) -> None:
    started(client, auth)
    for user in range(10):
        pinned = infer(client, auth, [ROWS[1]], path=f"{V2}/versions/2/infer", X_User_Id=f"u{user}")
        assert "experiment" not in pinned["parameters"] and "arm" not in pinned["parameters"]
        assert pinned["model_version"] == "2"


def test_shadow_copies_never_change_the_v2_answer_and_reach_the_challenger(
    client: TestClient, auth: Auth, container: Container, iris: str
) -> None:
    experiment = started(client, auth, mode="shadow", routingKey=None)
    calls = 0
    for row in ROWS * 2:
        routed = infer(client, auth, [row])
        own = infer(client, auth, [row], path=f"{V2}/versions/1/infer")
        assert routed["parameters"]["arm"] == "A" and routed["model_version"] == "1"
        assert labels(routed) == labels(own)
        calls += 1

    def shadowed() -> bool:
        container.experiments.recorder.flush()
        found = {a["arm"]: a for a in results(client, auth, experiment["id"])["arms"]}
        return found["B"]["shadowRequests"] == calls and found["A"]["requests"] == calls

    wait_until(shadowed, what="the challenger's shadow observations of v2 calls")


def test_results_count_v2_calls_per_row_with_their_predictions(
    client: TestClient, auth: Auth, container: Container, iris: str
) -> None:
    experiment = started(client, auth)
    for user in range(10):
        infer(client, auth, [ROWS[user % len(ROWS)]], X_User_Id=f"user-{user}")
    infer(client, auth, ROWS, X_User_Id="batcher")
    container.experiments.recorder.flush()
    arms = results(client, auth, experiment["id"])["arms"]
    assert sum(arm["requests"] for arm in arms) == 10 + len(ROWS)
    assert sum(sum(arm["predictions"].values()) for arm in arms) == 10 + len(ROWS)


def test_a_binary_v2_call_is_routed_and_counted_too(
    client: TestClient, auth: Auth, container: Container, iris: str
) -> None:
    experiment = started(client, auth)
    seen = set()
    for user in range(20):
        meta = binary_infer(client, auth, [ROWS[2]], X_User_Id=f"user-{user}")
        again = binary_infer(client, auth, [ROWS[2]], X_User_Id=f"user-{user}")
        assert meta["parameters"]["experiment"] == experiment["id"]
        assert again["parameters"]["arm"] == meta["parameters"]["arm"]
        assert meta["model_version"] == ("1" if meta["parameters"]["arm"] == "A" else "2")
        seen.add(meta["parameters"]["arm"])
    container.experiments.recorder.flush()
    arms = results(client, auth, experiment["id"])["arms"]
    assert sum(arm["requests"] for arm in arms) == 40
    assert seen == {"A", "B"}
