"""Child side of edge export: load the stored artifact with its runtime (the same safe loaders as an
upload's inspection, ADR 5) and write it as TorchScript or TFLite."""

from __future__ import annotations

import json
import resource
import warnings
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from aiservice.infrastructure.runtimes.archives import ArchiveLimits
from aiservice.infrastructure.runtimes.inspect_worker import spec_of
from aiservice.infrastructure.runtimes.registry import FrameworkRegistry


def convert_into(request: dict[str, Any], sender: Connection) -> None:
    """Process target: convert one artifact, send ``{"error": why}`` or ``{}`` with peak memory."""
    try:
        report = convert_request(request)
    except Exception as exc:
        report = {"error": _first_line(exc)}
    report["peakRssBytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    sender.send(json.loads(json.dumps(report, default=str)))
    sender.close()


def convert_request(request: dict[str, Any]) -> dict[str, Any]:
    spec = spec_of(request)
    registry = FrameworkRegistry.discover(ArchiveLimits.from_json(request.get("archiveLimits")))
    loaded: Any = registry.get(spec.framework).load(Path(request["path"]), spec)
    out = Path(request["out"])
    if request["format"] == "torchscript":
        _torchscript(loaded, out)
    elif request["format"] == "tflite":
        _tflite(loaded, out)
    else:
        return {"error": f"no converter to {request['format']}"}
    return {}


def _torchscript(loaded: Any, out: Path) -> None:
    import torch

    module = loaded.module
    if not isinstance(module, torch.jit.ScriptModule):
        inputs = loaded.signature.inputs
        shape = inputs[0].shape[1:] if len(inputs) == 1 else ()
        if not shape or any(d < 1 for d in shape):
            raise ValueError("tracing needs a fixed input shape, which this model does not declare")
        example = torch.zeros((1, *shape), dtype=getattr(torch, inputs[0].dtype, torch.float32))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = torch.jit.trace(module, example)  # type: ignore[no-untyped-call]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.save(module, str(out))


def _tflite(loaded: Any, out: Path) -> None:
    import keras
    import tensorflow as tf

    model = loaded._keep  # the Keras model (or SavedModel object) the runtime's forward function reads
    if not isinstance(model, keras.Model):
        raise ValueError("only .keras models are converted to TFLite")
    try:
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        data = converter.convert()
    except Exception:  # Keras 3 models convert through a concrete function of their call
        inputs = [tf.TensorSpec([None, *t.shape[1:]], t.dtype) for t in model.inputs]
        function = tf.function(lambda *x: model(list(x) if len(x) > 1 else x[0], training=False))
        concrete = function.get_concrete_function(*inputs)
        data = tf.lite.TFLiteConverter.from_concrete_functions([concrete], model).convert()
    out.write_bytes(np.frombuffer(data, dtype=np.uint8).tobytes())


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]
