"""Which form of a version serves: its compiled ONNX form where one was kept, except for a model
whose callers may send missing values that the ONNX form was found to answer differently."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from aiservice.application.serving.routing import serving_form
from aiservice.domain.models import ArtifactRef, Framework, Model, ModelVersion, ServingRecord

NOW = datetime(2026, 1, 1, tzinfo=UTC)
NULLABLE = {"type": "tabular", "features": [{"name": "a", "nullable": True}, {"name": "b"}]}
STRICT = {"type": "tabular", "features": [{"name": "a"}, {"name": "b"}]}
ONNX = {"key": "k", "digest": "d", "sizeBytes": 1}


def version(serving: dict[str, Any]) -> ModelVersion:
    artifact = ArtifactRef("key", "digest", 1, "model.skops", "application/x-skops")
    return ModelVersion("acme", "m", 1, artifact, NOW, serving=ServingRecord.from_json(serving))


@pytest.mark.parametrize(
    ("schema", "serving", "form"),
    [
        (STRICT, {"form": "native"}, "native"),
        (STRICT, {"form": "onnx", "onnx": ONNX, "missingValues": "same"}, "onnx"),
        (NULLABLE, {"form": "onnx", "onnx": ONNX, "missingValues": "same"}, "onnx"),
        (STRICT, {"form": "onnx", "onnx": ONNX, "missingValues": "differ"}, "onnx"),
        (NULLABLE, {"form": "onnx", "onnx": ONNX, "missingValues": "differ"}, "native"),
        (NULLABLE, {"form": "native", "onnx": ONNX, "missingValues": "differ"}, "native"),
    ],
)
def test_the_onnx_form_serves_unless_callers_may_send_what_it_answers_differently(
    schema: dict[str, Any], serving: dict[str, Any], form: str
) -> None:
    model = Model("acme", "m", Framework("sklearn"), NOW, NOW, input_schema=schema)
    assert serving_form(model, version(serving)) == form
