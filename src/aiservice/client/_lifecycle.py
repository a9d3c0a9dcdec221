"""The calls of a model's life after training (issue 16): AutoML studies, optimised versions, edge export
bundles and imported MLflow or Hugging Face folders. Built once here, as ``_ops`` builds the others, and
sent by the sync and the async client alike."""

from __future__ import annotations

import io
import json
import os
import tempfile
import zipfile
from collections.abc import Callable, Mapping, Sequence
from email.message import Message
from pathlib import Path
from typing import Any

from aiservice.client._core import Call, Upload, api, paged
from aiservice.client._ops import PAGE_SIZE, _camel, _one
from aiservice.client.types import Dataset, Page, StudyState, Version

EXPORT_FORMATS = ("onnx", "torchscript", "tflite")
IMPORT_SOURCES = ("mlflow", "huggingface")


def _plain(value: Any) -> Any:
    """Rows and labels as JSON takes them: a numpy array or a pandas object through ``tolist()``."""
    return value.tolist() if hasattr(value, "tolist") else value


def dataset_config(
    dataset: Any,
    target: str | None,
    features: Sequence[str] | None,
    data_format: str | None,
    validation_split: float | None = None,
    validation_path: str | None = None,
) -> dict[str, Any]:
    """A ``datasetConfig``: from a path or URI the service reads, or an uploaded ``Dataset``; a mapping is
    taken as the API's own (camelCase) ``datasetConfig``, the other arguments added to it."""
    if isinstance(dataset, Mapping):
        config = {_camel(k): v for k, v in dataset.items()}
    else:
        config = {"trainPath": dataset.uri if isinstance(dataset, Dataset) else str(dataset)}
        if isinstance(dataset, Dataset) and data_format is None:
            data_format = dataset.format  # a dataset:// URI has no extension to tell it by
    extra = {
        "target": target,
        "features": list(features) if features else None,
        "format": data_format,
        "validationSplit": validation_split,
        "validationPath": validation_path,
    }
    config.update({k: v for k, v in extra.items() if v is not None})
    return config


# AutoML


def study_body(
    data: Mapping[str, Any],
    task: str,
    metric: str,
    max_trials: int | None,
    timeout_seconds: int | None,
    options: Mapping[str, Any],
) -> dict[str, Any]:
    """The ``automl`` body; ``options``: algorithms, search_spaces, seed, cv_folds, parallel_trials."""
    budget = {"maxTrials": max_trials, "timeoutSeconds": timeout_seconds}
    body: dict[str, Any] = {
        "datasetConfig": dict(data),
        "task": task,
        "metric": metric,
        "budget": {k: v for k, v in budget.items() if v is not None},
    }
    for name, value in options.items():
        if value is not None:
            body[_camel(name)] = list(value) if name == "algorithms" else value
    return body


def start_study(model: str, body: Mapping[str, Any]) -> Call[StudyState]:
    return Call("POST", api("models", model, "automl"), _one(StudyState.from_json), json=dict(body))


def list_studies(model: str, limit: int = PAGE_SIZE) -> Callable[[str | None], Call[Page]]:
    return paged("GET", api("models", model, "automl"), {"limit": limit})


def get_study(model: str, study: str) -> Call[StudyState]:
    return Call("GET", api("models", model, "automl", study), _one(StudyState.from_json))


def cancel_study(model: str, study: str) -> Call[StudyState]:
    return Call("POST", api("models", model, "automl", study, "cancel"), _one(StudyState.from_json))


def study_events_path(model: str, study: str) -> str:
    return api("models", model, "automl", study, "events")


# Optimisation


def optimize_body(
    method: str,
    rows: Any,
    labels: Any,
    dataset: Any,
    target: str | None,
    sample: int | None,
    options: Mapping[str, Any],
) -> dict[str, Any]:
    """The ``optimize`` body: validation on inline ``rows``/``labels`` or a sample of ``dataset``;
    ``options`` (snake_case) as the API names them: max_accuracy_drop, mode, form, sparsity,
    calibration_rows, target_model, description, latency_calls."""
    if (rows is None) != (labels is None):
        raise ValueError("give validation rows and labels together")
    if (rows is None) == (dataset is None):
        raise ValueError("validate on rows and labels, or on a dataset, not both and not neither")
    if dataset is not None:
        validation: dict[str, Any] = {"datasetConfig": dataset_config(dataset, target, None, None)}
        if sample is not None:
            validation["sample"] = sample
    else:
        validation = {"rows": _plain(rows), "labels": _plain(labels)}
    body: dict[str, Any] = {"method": method, "validation": validation}
    for name, value in options.items():
        if value is not None:
            body[_camel(name)] = _plain(value)
    return body


def optimize(model: str, version: int, body: Mapping[str, Any]) -> Call[Version]:
    path = api("models", model, "versions", version, "optimize")
    return Call("POST", path, _one(Version.from_json), json=dict(body))


# Edge export


def export_path(model: str, version: int) -> str:
    return api("models", model, "versions", version, "export")


def check_format(format: str) -> str:
    if format not in EXPORT_FORMATS:
        raise ValueError(f"format must be one of {', '.join(EXPORT_FORMATS)}, not {format!r}")
    return format


def attachment_name(disposition: str | None, fallback: str) -> str:
    """The file name a ``Content-Disposition`` names, without any folder (never a path outside)."""
    message = Message()
    message["content-disposition"] = disposition or ""
    name = message.get_filename() or fallback
    return Path(name.replace("\\", "/")).name or fallback


def export_target(path: str | Path | None, filename: str) -> Path:
    """Where a bundle goes: ``path``, or into it when it is a folder; the working folder without one."""
    if path is None:
        return Path(filename)
    target = Path(path)
    return target / filename if target.is_dir() else target


class Staged:
    """A download written beside its target and moved over it only once complete and checked, so a
    failed or mismatched download never leaves half a file under the name asked for."""

    def __init__(self, target: Path) -> None:
        self.target = target
        handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
        self.handle = os.fdopen(handle, "wb")
        self.part = Path(name)

    def write(self, chunk: bytes) -> None:
        self.handle.write(chunk)

    def commit(self) -> Path:
        self.handle.close()
        os.replace(self.part, self.target)
        return self.target

    def discard(self) -> None:
        self.handle.close()
        self.part.unlink(missing_ok=True)


# Imports


def _zipped_folder(folder: Path) -> bytes:
    """A folder as a zip, files in name order (the same folder gives the same bytes)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(p for p in folder.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(file.relative_to(folder).as_posix(), date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, file.read_bytes())
    return buffer.getvalue()


def import_upload(
    archive: str | Path | bytes,
    source: str | None,
    metadata: Mapping[str, Any] | None,
    filename: str | None,
) -> Upload:
    """The multipart body of an import: a zip or tar.gz file, a folder (zipped here), or raw bytes."""
    if source is not None and source not in IMPORT_SOURCES:
        raise ValueError(f"source must be one of {', '.join(IMPORT_SOURCES)}, not {source!r}")
    if isinstance(archive, bytes | bytearray | memoryview):
        data = bytes(archive)
        body: bytes | Path = data
        name = filename or ("model.zip" if data.startswith(b"PK\x03\x04") else "model.tar.gz")
    else:
        path = Path(archive)
        if path.is_dir():
            body, name = _zipped_folder(path), filename or f"{path.resolve().name or 'model'}.zip"
        else:
            body, name = path, filename or path.name
    fields: dict[str, str] = {}
    if source is not None:
        fields["source"] = source
    if metadata:
        fields["metadata"] = json.dumps({_camel(k): v for k, v in metadata.items()})
    return Upload(filename=name, source=body, fields=fields)


def import_model(model: str, upload: Upload) -> Call[Version]:
    return Call("POST", api("models", model, "import"), _one(Version.from_json), upload=upload)
