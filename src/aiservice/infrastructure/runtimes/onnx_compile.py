"""Automatic ONNX compilation, child side: convert a native model, check it against the original on a
sample, and time both, so the parent can keep the compiled form only where it is right and faster.

Each framework's plugin converts its own models (``FrameworkPlugin.to_onnx``); a framework without a
converter is not compiled.
"""

from __future__ import annotations

import json
import resource
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from aiservice.application.ports import LoadedModel, LoadSpec, Prediction
from aiservice.domain.models import Framework
from aiservice.domain.signature import Signature
from aiservice.infrastructure.runtimes.archives import ArchiveLimits
from aiservice.infrastructure.runtimes.inspect_worker import spec_of
from aiservice.infrastructure.runtimes.registry import FrameworkRegistry
from aiservice.infrastructure.runtimes.trials import tabular_batch, with_nullability

SAMPLE_ROWS = 256
PROBABILITY_TOLERANCE = 1e-4
VALUE_RTOL = 1e-4
TIMING_CALLS = 200


def compile_into(request: dict[str, Any], sender: Connection) -> None:
    """Process target: compile one artifact, send the report (plain JSON types) with peak memory."""
    try:
        report = compile_request(request)
    except Exception as exc:
        report = {"kept": False, "form": "native", "reason": f"compilation failed: {_first_line(exc)}"}
    report["peakRssBytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    sender.send(json.loads(json.dumps(report, default=str)))
    sender.close()


def compile_request(request: dict[str, Any]) -> dict[str, Any]:
    spec = spec_of(request)
    framework = spec.framework
    registry = FrameworkRegistry.discover(ArchiveLimits.from_json(request.get("archiveLimits")))
    plugin = registry.plugin(framework)
    if plugin is None or plugin.to_onnx is None:
        return {"kept": False, "form": "native", "reason": f"{framework} models are not converted to ONNX"}
    native = registry.get(framework).load(Path(request["path"]), spec)
    signature = with_nullability(native)
    sample = _sample(signature)
    if sample is None:
        return {"kept": False, "form": "native", "reason": "the input is not a fixed-shape numeric tensor"}
    onnx_bytes, configuration = plugin.to_onnx(native, sample, signature)
    out = Path(request["out"])
    out.write_bytes(onnx_bytes)
    compiled = registry.get(Framework.ONNX).load(
        out, LoadSpec(Framework.ONNX, "model.onnx", configuration=configuration)
    )
    try:
        compiled_prediction = compiled.predict(sample)
    except Exception as exc:
        out.unlink(missing_ok=True)
        return {
            "kept": False,
            "form": "native",
            "reason": f"the ONNX form fails on the check sample: {_first_line(exc)}",
        }
    difference, agree = _compare(native.predict(sample), compiled_prediction, signature.task)
    tolerance = PROBABILITY_TOLERANCE if signature.task == "classification" else VALUE_RTOL
    report: dict[str, Any] = {
        "tolerance": tolerance,
        "maxAbsDiff": difference,
        "sampleRows": SAMPLE_ROWS,
        "missingValues": _missing_values(native, compiled, signature),
    }
    if not agree:
        out.unlink(missing_ok=True)
        return {
            **report,
            "kept": False,
            "form": "native",
            "reason": f"the ONNX outputs differ from the native model's (max difference {difference:.3g})",
        }
    native_us = _per_call_us(native, sample[:1])
    onnx_us = _per_call_us(compiled, sample[:1])
    native_batch_us = _per_call_us(native, sample, calls=20) / SAMPLE_ROWS
    onnx_batch_us = _per_call_us(compiled, sample, calls=20) / SAMPLE_ROWS
    faster = onnx_us < native_us
    return {
        **report,
        "kept": True,
        "form": "onnx" if faster else "native",
        "reason": (
            f"ONNX matches within {tolerance:g} and answers one row in {onnx_us:.0f} us against "
            f"{native_us:.0f} us natively" + ("" if faster else "; the native form is faster, so it serves")
        ),
        "latencyUs": {
            "nativeRow": round(native_us, 2),
            "onnxRow": round(onnx_us, 2),
            "nativePerRowInBatch": round(native_batch_us, 3),
            "onnxPerRowInBatch": round(onnx_batch_us, 3),
        },
        "configuration": configuration,
    }


def _missing_values(native: LoadedModel, compiled: LoadedModel, signature: Signature) -> str:
    """Whether the ONNX form answers rows with missing values as the native one does: "same",
    "differ" (such rows are then served natively) or "none" (the model answers no missing value)."""
    if not any(c.nullable for c in signature.columns or ()):
        return "none"
    sample = tabular_batch(signature.columns or (), SAMPLE_ROWS, seed=1, missing=True)
    try:
        _difference, agree = _compare(native.predict(sample), compiled.predict(sample), signature.task)
    except Exception:
        return "differ"
    return "same" if agree else "differ"


def _sample(signature: Signature) -> np.ndarray | None:
    """The seeded rows both forms must agree on: a table's columns as the model takes them, else a
    fixed-shape numeric tensor."""
    if signature.columns:
        return tabular_batch(signature.columns, SAMPLE_ROWS)
    shape = signature.inputs[0].shape[1:] if len(signature.inputs) == 1 else ()
    if not shape or any(d < 1 for d in shape) or signature.inputs[0].dtype == "object":
        return None
    return np.random.default_rng(0).normal(size=(SAMPLE_ROWS, *shape)).astype(np.float32)


def _compare(native: Prediction, compiled: Prediction, task: str) -> tuple[float, bool]:
    if task == "classification" and native.probabilities is not None and compiled.probabilities is not None:
        difference = float(np.max(np.abs(native.probabilities - compiled.probabilities)))
        differ = np.asarray(native.values) != np.asarray(compiled.values)
        # A row whose two best classes tie (within the tolerance) may be labelled either way.
        top2 = np.sort(native.probabilities, axis=1)[:, -2:]
        ties = (top2[:, 1] - top2[:, 0]) <= PROBABILITY_TOLERANCE
        return difference, difference <= PROBABILITY_TOLERANCE and not bool(np.any(differ & ~ties))
    a = np.asarray(native.values, dtype=np.float64).ravel()
    b = np.asarray(compiled.values, dtype=np.float64).ravel()
    if a.shape != b.shape:
        return float("inf"), False
    difference = float(np.max(np.abs(a - b))) if a.size else 0.0
    return difference, bool(np.allclose(a, b, rtol=VALUE_RTOL, atol=VALUE_RTOL))


def _per_call_us(model: LoadedModel, batch: np.ndarray, calls: int = TIMING_CALLS) -> float:
    model.predict(batch)  # warm up
    timings = []
    for _ in range(calls):
        started = time.perf_counter()
        model.predict(batch)
        timings.append(time.perf_counter() - started)
    return float(np.median(timings) * 1e6)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__)[:300]
