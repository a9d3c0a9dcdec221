"""An artifact's media type comes from our map of model formats, not from the host's mime.types."""

from __future__ import annotations

import pytest

from aiservice.domain.media_types import artifact_media_type


@pytest.mark.parametrize(
    ("filename", "expected"),
    [
        ("model.pt", "application/x-pytorch"),  # mimetypes says application/vnd.snesdev-page-table
        ("MODEL.ONNX", "application/onnx"),
        ("model.ubj", "application/ubjson"),
        ("weights.safetensors", "application/x-safetensors"),
        ("classifier.joblib", "application/x-joblib"),
        ("saved_model.tar.gz", "application/gzip"),
    ],
)
def test_model_formats_have_their_own_media_type(filename: str, expected: str) -> None:
    assert artifact_media_type(filename) == expected


@pytest.mark.parametrize("filename", ["model.bin", "model.html", "artifact", "model.pt.txt"])
def test_an_unknown_format_is_an_octet_stream(filename: str) -> None:
    assert artifact_media_type(filename) == "application/octet-stream"
