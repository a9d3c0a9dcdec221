"""Child process of the artifact inspector: load once, try a prediction, print the signature as JSON.

Runs as ``python -m aiservice.infrastructure.runtimes.inspect_worker`` with the load spec on stdin,
so a crash, a hang or a memory blow-up of an untrusted artifact costs this process, not the service.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from aiservice.application.ports import LoadSpec
from aiservice.domain.errors import DomainError
from aiservice.domain.models import Framework
from aiservice.domain.signature import Signature
from aiservice.infrastructure.runtimes.registry import RuntimeRegistry


def smoke_batch(signature: Signature) -> np.ndarray | None:
    """Two rows of zeros shaped like the model's only input, when its shape is fully known."""
    if len(signature.inputs) != 1:
        return None
    spec = signature.inputs[0]
    dims = spec.shape[1:]
    if not spec.shape or any(d < 1 for d in dims) or spec.dtype == "object":
        return None
    return np.zeros((2, *dims), dtype=spec.dtype)


def inspect(request: dict[str, Any]) -> dict[str, Any]:
    spec = LoadSpec(
        framework=Framework(request["framework"]),
        filename=request["filename"],
        allow_pickle=bool(request.get("allowPickle", False)),
        configuration=request.get("configuration", {}),
    )
    model = RuntimeRegistry.discover().get(spec.framework).load(Path(request["path"]), spec)
    batch = smoke_batch(model.signature)
    if batch is not None:
        try:
            model.predict(batch)
        except Exception as exc:
            return {
                "error": {
                    "code": "invalid-artifact",
                    "detail": f"The model loaded but failed on a trial input of shape {list(batch.shape)}: {exc}",
                }
            }
    return {"signature": model.signature.to_json()}


def main() -> None:
    request = json.loads(sys.stdin.read())
    try:
        result = inspect(request)
    except DomainError as exc:
        result = {"error": {"code": exc.code, "detail": exc.detail, "extra": exc.extra}}
    except Exception as exc:
        result = {"error": {"code": "invalid-artifact", "detail": f"The artifact cannot be loaded: {exc}"}}
    sys.stdout.write(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
