"""Labels come from outputSchema.classes for every framework, a model of category classification is a
classifier without configuration.task, and a tensor schema's shape is one sample's shape."""

from __future__ import annotations

import io
import warnings

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from sklearn.datasets import load_iris

from tests.conftest import Auth
from tests.helpers import create_model, upload

API = "/api/v1/ai/models"
CLASSES = ["setosa", "versicolor", "virginica"]
X = load_iris().data.astype(np.float32)


def scripted_mlp(inputs: int = 4) -> tuple[torch.nn.Module, bytes]:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(inputs, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3)).eval()
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript: deprecated, still shipped
        torch.jit.save(torch.jit.script(net), buffer)
    return net, buffer.getvalue()


def test_a_torch_model_of_category_classification_answers_its_class_names(
    client: TestClient, auth: Auth
) -> None:
    net, artifact = scripted_mlp()
    create_model(
        client,
        auth(),
        "mlp",
        framework="pytorch",
        category="classification",
        outputSchema={"classes": CLASSES},
        inputSchema={"type": "tensor", "name": "x", "dtype": "float32", "shape": [4]},
    )
    assert upload(client, auth(), "mlp", artifact, filename="model.pt").status_code == 201
    response = client.post(
        f"{API}/mlp/predict",
        json={"input": {"x": X[120].tolist()}, "options": {"includeConfidence": True}},
        headers=auth(),
    )
    assert response.status_code == 200, response.text
    with torch.inference_mode():
        expected = torch.softmax(net(torch.from_numpy(X[120:121])), dim=1).numpy()[0]
    body = response.json()
    assert body["prediction"] == CLASSES[int(expected.argmax())]
    assert list(body["probabilities"]) == CLASSES
    assert list(body["probabilities"].values()) == pytest.approx(expected.tolist(), abs=1e-5)
    metadata = client.get("/v2/models/mlp", headers=auth()).json()
    assert metadata["outputs"][0] == {"name": "label", "datatype": "BYTES", "shape": [-1]}


def test_a_shape_with_a_batch_dimension_is_refused_at_upload_saying_what_shape_means(
    client: TestClient, auth: Auth
) -> None:
    """The model takes [N, 4]: its samples are [4]; [-1, 4] would be a sample of rows."""
    _net, artifact = scripted_mlp()
    create_model(
        client,
        auth(),
        "mlp",
        framework="pytorch",
        configuration={"inputShape": [4]},
        inputSchema={"type": "tensor", "name": "x", "dtype": "float32", "shape": [-1, 4]},
    )
    response = upload(client, auth(), "mlp", artifact, filename="model.pt")
    assert response.status_code == 422, response.text
    (error,) = response.json()["errors"]
    assert error["field"] == "inputSchema.shape"
    assert "samples of shape [-1, 4]" in error["message"] and "samples of shape [4]" in error["message"]


def test_a_sample_shape_is_accepted_for_a_model_of_any_width_and_served(
    client: TestClient, auth: Auth
) -> None:
    """A TorchScript model does not say its width ([-1, -1]): [3] is one sample of three values."""
    net, artifact = scripted_mlp(inputs=3)
    create_model(
        client,
        auth(),
        "mlp",
        framework="pytorch",
        inputSchema={"type": "tensor", "name": "x", "dtype": "float32", "shape": [3]},
    )
    assert upload(client, auth(), "mlp", artifact, filename="model.pt").status_code == 201
    response = client.post(f"{API}/mlp/predict", json={"input": {"x": [0.5, 1.0, -2.0]}}, headers=auth())
    assert response.status_code == 200, response.text
    with torch.inference_mode():
        expected = net(torch.tensor([[0.5, 1.0, -2.0]])).numpy()[0]
    assert response.json()["prediction"] == pytest.approx(expected.tolist(), abs=1e-5)
    wrong = client.post(f"{API}/mlp/predict", json={"input": {"x": [0.5, 1.0]}}, headers=auth())
    assert wrong.status_code == 422
    assert "has shape [2], expected [3]" in wrong.json()["errors"][0]["message"]
