"""Image inputs: base64 PNG/JPEG decoded, resized and normalised as the model declares; bad images and
image bombs are refused with the field named."""

from __future__ import annotations

import base64
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

from tests.conftest import Auth
from tests.helpers import create_model, upload

pytestmark = pytest.mark.filterwarnings(
    "ignore:`torch.jit.(trace|trace_method|save)` is deprecated:DeprecationWarning"
)

API = "/api/v1/ai/models"
CONFIG = {"inputShape": [8, 8, 1], "task": "classification", "normalize": {"scale": 1 / 255}}


class TinyImageNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(64, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.reshape(x.shape[0], -1))


@pytest.fixture
def image_model(client: TestClient, auth: Auth, tmp_path: Path) -> torch.nn.Module:
    net = TinyImageNet().eval()
    path = tmp_path / "net.pt"
    torch.jit.save(torch.jit.trace(net, torch.zeros(1, 8, 8, 1)), path)
    create_model(
        client,
        auth(),
        "digits",
        framework="pytorch",
        configuration=CONFIG,
        inputSchema={"type": "image", "format": "png", "maxPixels": 1_000_000},
        outputSchema={"classes": ["a", "b", "c"]},
    )
    assert upload(client, auth(), "digits", path.read_bytes(), filename="net.pt").status_code == 201
    return net


def png(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_png_is_resized_normalised_and_predicted(
    client: TestClient, auth: Auth, image_model: torch.nn.Module
) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, size=(32, 32), dtype=np.uint8)
    image = Image.fromarray(pixels, mode="L")
    response = client.post(
        f"{API}/digits/predict",
        json={"input": {"image": png(image)}, "options": {"includeConfidence": True}},
        headers=auth(),
    )
    assert response.status_code == 200, response.text
    expected_input = np.asarray(image.resize((8, 8)), dtype=np.float32).reshape(1, 8, 8, 1) / 255
    with torch.inference_mode():
        expected = torch.softmax(image_model(torch.from_numpy(expected_input)), dim=1).numpy()[0]
    body = response.json()
    assert body["prediction"] == "abc"[int(expected.argmax())]
    assert list(body["probabilities"].values()) == pytest.approx(list(expected), abs=1e-5)


def _png_header_only(width: int, height: int) -> str:
    """A PNG that claims to be width x height: what an image bomb looks like before decoding."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    raw = (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )
    return base64.b64encode(raw).decode()


def _jpeg() -> str:
    buffer = io.BytesIO()
    Image.new("L", (8, 8)).save(buffer, format="JPEG")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("not base64 at all!", "is not valid base64"),
        (base64.b64encode(b"plain text, not an image").decode(), "is not a readable image"),
        (_png_header_only(5_000, 5_000), "pixels, more than the 1000000 allowed"),
        (_png_header_only(50_000, 50_000), "is too large to decode safely"),
        (_jpeg(), "must be png"),
        (12345, "must be a base64-encoded image string"),
    ],
    ids=["not-base64", "not-an-image", "over-max-pixels", "image-bomb", "wrong-format", "not-a-string"],
)
def test_bad_images_are_refused_naming_the_field(
    client: TestClient, auth: Auth, image_model: torch.nn.Module, value: object, message: str
) -> None:
    response = client.post(f"{API}/digits/predict", json={"input": {"image": value}}, headers=auth())
    assert response.status_code == 422
    (error,) = response.json()["errors"]
    assert error["field"] == "input.image"
    assert message in error["message"]
    healthy = client.post(
        f"{API}/digits/predict", json={"input": {"image": png(Image.new("L", (8, 8)))}}, headers=auth()
    )
    assert healthy.status_code == 200


def test_the_product_specs_image_model_works_as_written(
    client: TestClient, auth: Auth, tmp_path: Path
) -> None:
    """The spec's own example: an output schema with a type and classes, an image input declared as
    jpeg, and a prediction of {"input": {"image": "<base64>"}}."""
    net = TinyImageNet().eval()
    path = tmp_path / "net.pt"
    torch.jit.save(torch.jit.trace(net, torch.zeros(1, 8, 8, 1)), path)
    created = create_model(
        client,
        auth(),
        "spec-images",
        framework="pytorch",
        configuration=CONFIG,
        inputSchema={"type": "image", "format": "jpeg"},
        outputSchema={"type": "classification", "classes": ["cat", "dog", "bird"]},
    )
    assert created["outputSchema"]["type"] == "classification"
    assert upload(client, auth(), "spec-images", path.read_bytes(), filename="net.pt").status_code == 201
    buffer = io.BytesIO()
    Image.fromarray(np.full((8, 8), 200, dtype=np.uint8), mode="L").save(buffer, format="JPEG", quality=100)
    response = client.post(
        f"{API}/spec-images/predict",
        json={"input": {"image": base64.b64encode(buffer.getvalue()).decode()}},
        headers=auth(),
    )
    assert response.status_code == 200, response.text
    decoded = (
        np.asarray(Image.open(io.BytesIO(buffer.getvalue())), dtype=np.float32).reshape(1, 8, 8, 1) / 255
    )
    with torch.inference_mode():
        expected = int(net(torch.from_numpy(decoded)).argmax())
    assert response.json()["prediction"] == ["cat", "dog", "bird"][expected]
