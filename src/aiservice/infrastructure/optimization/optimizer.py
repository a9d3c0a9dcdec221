"""The framework side of model optimisation: ONNX Runtime dynamic/static INT8 and float16 weights for
ONNX files; torch dynamic quantisation, L1 magnitude pruning and half precision for torch state_dicts.

Every result is written in a format the runtimes load safely (ADR 0005): an ONNX file, a torch
state_dict (pruning keeps the architecture), or TorchScript where the module changes type (quantised
or half-precision layers). Both forms are loaded through the runtimes and measured on the same rows.
"""

from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from aiservice.application.optimization import OptimizationJob, OptimizationOutcome
from aiservice.application.ports import LoadedModel, Prediction
from aiservice.domain.errors import DomainError, FieldError, InvalidInput
from aiservice.domain.models import Framework
from aiservice.infrastructure.runtimes.registry import FrameworkRegistry

QUIET = (r"(?s).*quantiz", r"(?s).*torch\.jit", r"(?s).*TorchScript")


class RuntimeOptimizer:
    """``ModelOptimizer`` over the installed runtimes (which load both the source and the result)."""

    def __init__(self, runtimes: FrameworkRegistry) -> None:
        self._runtimes = runtimes

    def optimize(self, job: OptimizationJob) -> OptimizationOutcome:
        with warnings.catch_warnings():
            # Eager dynamic quantisation and TorchScript are deprecated upstream (torchao and
            # torch.export replace them; neither is a dependency here); both still ship, work and load.
            for message in QUIET:
                warnings.filterwarnings("ignore", message=message)
            return self._optimize(job)

    def _optimize(self, job: OptimizationJob) -> OptimizationOutcome:
        source = self._runtimes.get(job.framework).load(job.source, job.spec)
        rows = np.asarray(job.rows, dtype=np.float32)
        before = _score(_predict(source, rows), job)  # first: rows the source refuses are the caller's
        if job.framework == Framework.ONNX:
            artifact, configuration = _onnx(job, rows)
        else:
            artifact, configuration = _torch(job, source, rows)
        spec = type(job.spec)(
            job.framework, artifact.name, configuration={**job.spec.configuration, **configuration}
        )
        result = self._runtimes.get(job.framework).load(artifact, spec)
        after = _score(result.predict(rows), job)
        metric = "accuracy" if job.task == "classification" else "rmse"
        drop = before - after if metric == "accuracy" else (after - before) / max(before, 1e-12)
        size_before, size_after = job.source.stat().st_size, artifact.stat().st_size
        latency_before = _median_us(source, rows, job.latency_calls)
        latency_after = _median_us(result, rows, job.latency_calls)
        report = {
            f"{metric}Before": round(before, 6),
            f"{metric}After": round(after, 6),
            f"{metric}Delta": round(after - before, 6),
            "accuracyDrop": round(drop, 6),
            "validationRows": len(rows),
            "sizeBytesBefore": size_before,
            "sizeBytesAfter": size_after,
            "sizeRatio": round(size_after / max(size_before, 1), 4),
            "latencyUsBefore": round(latency_before, 2),
            "latencyUsAfter": round(latency_after, 2),
            "latencyRatio": round(latency_after / max(latency_before, 1e-9), 4),
            "latencyCalls": job.latency_calls,
        }
        return OptimizationOutcome(artifact, artifact.name, configuration, report, drop, metric)


# -- measuring ---------------------------------------------------------------------------------------


def _predict(model: LoadedModel, rows: np.ndarray) -> Prediction:
    """The source's predictions; rows it cannot take (a signature that does not say its width) are a
    422 on the validation, not a failure of the service."""
    try:
        return model.predict(rows)
    except DomainError:
        raise
    except Exception as exc:
        why = f"the version cannot predict these rows ({_first_line(exc)})"
        raise InvalidInput(f"{why}.", errors=[FieldError("body.validation", why)]) from exc


def _score(prediction: Prediction, job: OptimizationJob) -> float:
    values = np.asarray(prediction.values).ravel()
    if job.task == "classification":
        labels = np.asarray(job.labels).ravel()
        try:
            same = values.astype(np.float64) == labels.astype(np.float64)
        except (TypeError, ValueError):
            same = values.astype(str) == labels.astype(str)
        return float(np.mean(same))
    truth = np.asarray(job.labels, dtype=np.float64).ravel()
    return float(np.sqrt(np.mean((values.astype(np.float64) - truth) ** 2)))


def _median_us(model: LoadedModel, rows: np.ndarray, calls: int) -> float:
    """Median in-process latency of single-row predictions (cycling over the rows), after a warm-up."""
    model.predict(rows[:1])
    timings = []
    for index in range(calls):
        row = rows[index % len(rows) : index % len(rows) + 1]
        started = time.perf_counter()
        model.predict(row)
        timings.append(time.perf_counter() - started)
    return statistics.median(timings) * 1e6


# -- ONNX --------------------------------------------------------------------------------------------


def _onnx(job: OptimizationJob, rows: np.ndarray) -> tuple[Path, dict[str, Any]]:
    out = job.out_dir / "model.onnx"
    if job.method == "quantization":
        from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

        source = _with_default_domain(job.source, job.out_dir / "source.onnx")
        try:
            if job.mode == "dynamic":
                quantize_dynamic(source, out, weight_type=QuantType.QInt8)
            else:
                quantize_static(
                    source,
                    out,
                    _Calibration(source, np.asarray(job.calibration_rows, dtype=np.float32)),
                    quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                )
        except Exception as exc:
            raise _cannot(job, f"ONNX Runtime could not quantise this graph ({_first_line(exc)})") from exc
        return out, {}
    if job.method == "float16":
        _float16_weights(job, out)
        return out, {}
    raise _cannot(job, "pruning needs a torch model's weights")


def _with_default_domain(source: Path, copy: Path) -> Path:
    """The quantiser needs the default (ai.onnx) opset declared exactly once; some converters' graphs
    (skl2onnx's for linear models) declare it twice or not at all, so a copy declares it once."""
    import onnx
    from onnx import helper

    model = onnx.load_model(source, load_external_data=False)
    defaults = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    if len(defaults) == 1:
        return source
    others = [o for o in model.opset_import if o.domain not in ("", "ai.onnx")]
    del model.opset_import[:]
    model.opset_import.extend([*others, helper.make_opsetid("", max(defaults, default=15))])
    onnx.save_model(model, copy)
    return copy


class _Calibration:
    """onnxruntime's CalibrationDataReader protocol: one row per call, then None."""

    def __init__(self, model: Path, rows: np.ndarray) -> None:
        import onnxruntime as ort

        session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
        self._name = session.get_inputs()[0].name
        self._rows: Iterator[np.ndarray] = iter(rows)

    def get_next(self) -> dict[str, np.ndarray] | None:
        row = next(self._rows, None)
        return None if row is None else {self._name: row[None, :]}


def _float16_weights(job: OptimizationJob, out: Path) -> None:
    """Store every float32 initializer as float16, cast back to float32 where it is read: half the
    weight bytes, the graph's arithmetic and its inputs/outputs unchanged (ADR 0029)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load_model(job.source, load_external_data=False)
    graph = model.graph
    casts = []
    kept = []
    for initializer in graph.initializer:
        if initializer.data_type != TensorProto.FLOAT or initializer.name in {i.name for i in graph.input}:
            kept.append(initializer)
            continue
        half = numpy_helper.from_array(
            numpy_helper.to_array(initializer).astype(np.float16), f"{initializer.name}__fp16"
        )
        kept.append(half)
        casts.append(helper.make_node("Cast", [half.name], [initializer.name], to=TensorProto.FLOAT))
    if not casts:
        raise _cannot(job, "the ONNX graph has no float32 weights to convert")
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend([*casts, *nodes])
    onnx.save_model(model, out)


# -- torch -------------------------------------------------------------------------------------------


def _torch(job: OptimizationJob, source: LoadedModel, rows: np.ndarray) -> tuple[Path, dict[str, Any]]:
    import torch
    from torch import nn

    module = getattr(source, "module", None)
    if (
        not isinstance(module, nn.Module)
        or isinstance(module, torch.jit.ScriptModule)
        or ("architecture" not in job.spec.configuration)
    ):
        raise _cannot(job, "torch methods need a state_dict of a declared architecture")
    module = module.cpu().eval()
    example = torch.from_numpy(rows[:1])
    if job.method == "pruning":
        return _prune(module, job), {}
    if job.method == "quantization":
        optimized = torch.ao.quantization.quantize_dynamic(module, {nn.Linear}, dtype=torch.qint8)  # type: ignore[no-untyped-call]
    else:
        optimized = _half(module)
    out = job.out_dir / "model.pt"
    with torch.inference_mode():
        traced = torch.jit.trace(optimized, example)  # type: ignore[no-untyped-call]
    torch.jit.save(traced, str(out))
    return out, {"inputShape": [int(rows.shape[1])]}


def _prune(module: Any, job: OptimizationJob) -> Path:
    import copy

    import torch
    from torch import nn
    from torch.nn.utils import prune

    pruned = copy.deepcopy(module)
    parameters = [(layer, "weight") for layer in pruned.modules() if isinstance(layer, nn.Linear)]
    if not parameters:
        raise _cannot(job, "the module has no Linear layer to prune")
    prune.global_unstructured(parameters, pruning_method=prune.L1Unstructured, amount=job.sparsity)
    for layer, name in parameters:
        prune.remove(layer, name)  # type: ignore[no-untyped-call]
    out = job.out_dir / "model.pt"
    torch.save({k: v.detach().clone() for k, v in pruned.state_dict().items()}, out)
    return out


def _half_module() -> type:
    from torch import nn

    class Half(nn.Module):
        """Half-precision weights and arithmetic behind float32 inputs and outputs."""

        def __init__(self, inner: Any) -> None:
            super().__init__()
            import copy

            self.inner = copy.deepcopy(inner).half()

        def forward(self, x: Any) -> Any:
            return self.inner(x.half()).float()

    return Half


def _half(module: Any) -> Any:
    return _half_module()(module)


def _cannot(job: OptimizationJob, why: str) -> InvalidInput:
    return InvalidInput(
        f"{job.method} does not apply to this artifact: {why}.",
        errors=[FieldError("body.method", why)],
        code="method-not-applicable",
    )


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
