"""Edge export bundles: the converters (run in an isolated child, as an upload's inspection) and the
zip holding the model file, ``schema.json``, ``README.md`` and the reference runner ``run.py``.

The zip is reproducible: members in a fixed order with a fixed time and mode, so the same model file
and schema make the same bytes (and ETag) on every replica and after a rebuild."""

from __future__ import annotations

import json
import shutil
import zipfile
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from aiservice.application.export import BundleRequest, ExportFormat
from aiservice.application.ports import LoadSpec
from aiservice.infrastructure.export.convert import convert_into
from aiservice.infrastructure.export.runner_template import RUNNER
from aiservice.infrastructure.runtimes.archives import ArchiveLimits
from aiservice.infrastructure.runtimes.inspect_worker import spec_request
from aiservice.infrastructure.runtimes.inspector import IsolatedFailure, run_isolated

CONVERT_TIMEOUT_S = 300.0

# What each bundle's runner imports: (distribution, module it is imported as, why).
_DEPENDENCIES: dict[ExportFormat, tuple[str, ...]] = {
    ExportFormat.ONNX: ("numpy", "onnxruntime"),
    ExportFormat.TORCHSCRIPT: ("numpy", "torch"),
    ExportFormat.TFLITE: ("numpy", "tensorflow"),
}
_MODEL_FILES = {
    ExportFormat.ONNX: "model.onnx",
    ExportFormat.TORCHSCRIPT: "model.pt",
    ExportFormat.TFLITE: "model.tflite",
}


class ZipBundleBuilder:
    def __init__(
        self,
        timeout_s: float = CONVERT_TIMEOUT_S,
        memory_bytes: int = 4 * 1024**3,
        archive_limits: ArchiveLimits | None = None,
    ) -> None:
        self._timeout = timeout_s
        self._memory = memory_bytes
        self._archive_limits = archive_limits

    def convert(self, artifact: Path, spec: LoadSpec, format: ExportFormat, out: Path) -> str | None:
        request = spec_request(artifact, spec, self._archive_limits, out=str(out), format=format.value)
        try:
            report = run_isolated(
                convert_into, request, self._timeout, self._memory, what=f"Converting to {format.value}"
            )
        except IsolatedFailure as exc:
            return str(exc)
        error = report.get("error")
        return str(error) if error else None

    def bundle(self, model_file: Path, request: BundleRequest, out: Path) -> None:
        schema = {"format": request.format.value, "modelFile": _MODEL_FILES[request.format], **request.schema}
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            size = model_file.stat().st_size
            info = _member(_MODEL_FILES[request.format])
            info.file_size = size
            with (
                model_file.open("rb") as source,
                archive.open(info, "w", force_zip64=size > _ZIP64) as target,
            ):
                shutil.copyfileobj(source, target, 1 << 20)
            archive.writestr(_member("schema.json"), json.dumps(schema, indent=2, default=str) + "\n")
            archive.writestr(_member("README.md"), readme(request))
            archive.writestr(_member("run.py"), RUNNER)


_FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest a zip can say
_ZIP64 = (1 << 31) - 1


def _member(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16  # a regular file, rw-r--r--
    return info


# Distributions that install a module under another name (the CPU-only TensorFlow wheel, say).
_ALTERNATIVES = {"tensorflow": ("tensorflow", "tensorflow-cpu"), "torch": ("torch",)}


def _pinned(distribution: str) -> str:
    """The distribution as this service has it installed, pinned; unpinned if it is not installed."""
    for candidate in _ALTERNATIVES.get(distribution, (distribution,)):
        try:
            # Without a local segment (torch's "+cpu"), which only its own package index serves.
            return f"{candidate}=={version(candidate).split('+')[0]}"
        except PackageNotFoundError:
            continue
    return distribution


def readme(request: BundleRequest) -> str:
    deps = [_pinned(d) for d in _DEPENDENCIES[request.format]]
    model_file = _MODEL_FILES[request.format]
    runtime = {
        ExportFormat.ONNX: "ONNX Runtime (`onnxruntime.InferenceSession`, CPU provider)",
        ExportFormat.TORCHSCRIPT: "TorchScript (`torch.jit.load`)",
        ExportFormat.TFLITE: (
            "the TFLite interpreter: `ai_edge_litert.interpreter.Interpreter` when `ai-edge-litert` is "
            "installed, else `tensorflow.lite.Interpreter`"
        ),
    }[request.format]
    schema = request.schema
    features = ", ".join(schema.get("features") or []) or "(unnamed: send lists)"
    classes = schema.get("classes")
    alternative = (
        "\nOn a small device, `pip install ai-edge-litert numpy` instead of TensorFlow; the runner "
        "prefers it when present.\n"
        if request.format == ExportFormat.TFLITE
        else ""
    )
    return f"""# {request.model_name} v{request.version} ({request.format.value})

Version {request.version} of the {request.framework} model `{request.model_name}`, exported by aiservice
as `{model_file}` to run without the service, with {runtime}.

- `{model_file}`: the model
- `schema.json`: its input features in order ({features}), task ({schema.get("task")}), labels
  ({", ".join(map(str, classes)) if classes else "none"}), and the declared input/output schema
- `run.py`: a reference runner

## Run it

```sh
python -m venv .venv && .venv/bin/pip install {" ".join(deps)}
echo '{{"features": [...]}}' | .venv/bin/python run.py     # or: .venv/bin/python run.py rows.jsonl
```

Rows are JSON objects of named features, `{{"features": [...]}}` or plain lists, one per line or all in
one JSON list. Each prediction is printed as one JSON line: `prediction` (a label for classifiers)
and, for classifiers, `probabilities` by label.
{alternative}
The versions above are those the exporting service ran; nearby versions usually work too.
"""
