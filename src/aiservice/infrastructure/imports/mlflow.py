"""MLflow ``MLmodel`` folders, read as files: no MLflow at run time.

The ``MLmodel`` YAML names the flavors the model was saved with. We take, in this order, ``onnx``
(``data``: the graph), ``xgboost`` (``data``: the booster's JSON or UBJSON file), ``sklearn`` saved
with ``serialization_format: skops``, ``pytorch`` whose ``data/model.pth`` is TorchScript (MLflow saves a
scripted module with ``torch.jit.save``); a flavor of the model's own framework comes first when there
are several. A flavor whose files are pickles (``sklearn`` with pickle/cloudpickle, ``pytorch`` of an
eager module, saved with ``torch.save``) is refused, never loaded (ADR 0005), with the way to re-export
it safely. The
``signature`` (MLflow's column or tensor specs) is mapped to our input/output schemas, handed to the
use case (which gives them to a model that declares none, ADR 0031) and recorded in the version's
lineage with the run id, model uuid and ``metadata``.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from aiservice.application.imports import ImportedModel
from aiservice.domain.errors import FieldError, InvalidArtifact, UntrustedArtifact
from aiservice.domain.models import JsonObject

# flavor -> the framework whose runtime serves its files
SUPPORTED = {"onnx": "onnx", "xgboost": "xgboost", "sklearn": "sklearn", "pytorch": "pytorch"}
PRIORITY = ("onnx", "xgboost", "sklearn", "pytorch")
PICKLED = {
    "pytorch": (
        "saves the whole module with torch.save (a pickle)",
        "log the scripted module instead (mlflow.pytorch.log_model(torch.jit.script(model), ...), which "
        "MLflow saves as TorchScript), or an ONNX flavor (torch.onnx.export, then mlflow.onnx.log_model), "
        "or upload the state_dict with a declared architecture",
    ),
    "sklearn": (
        "is serialised with {format}, which runs code when loaded",
        'log it again with mlflow.sklearn.log_model(model, ..., serialization_format="skops"), '
        "or as ONNX (skl2onnx, then mlflow.onnx.log_model)",
    ),
}
_MAX_MLMODEL_BYTES = 1 << 20
_ZIP_MAGIC = b"PK\x03\x04"


def read(folder: Path, out: Path, framework: str) -> ImportedModel:
    document = _mlmodel(folder)
    flavors = document.get("flavors")
    if not isinstance(flavors, dict) or not flavors:
        raise _invalid("The MLmodel file names no flavors.", "MLmodel.flavors")
    name = _choose(flavors, framework, folder)
    flavor = flavors[name]
    if not isinstance(flavor, dict):
        raise _invalid(f"The MLmodel's {name!r} flavor is not a mapping.", f"MLmodel.flavors.{name}")
    if name == "onnx":
        source, filename = _member(folder, flavor, "data", name), "model.onnx"
    elif name == "pytorch":  # a scripted module, which MLflow saves as TorchScript (``_torchscript``)
        source, filename = _torch_file(folder, flavor), "model.pt"
    elif name == "xgboost":
        source = _member(folder, flavor, "data", name)
        filename = "model.json" if source.read_bytes()[:1] == b"{" else "model.ubj"
    else:
        source, filename = _member(folder, flavor, "pickled_model", name), "model.skops"
        with source.open("rb") as handle:
            if handle.read(4) != _ZIP_MAGIC:  # a skops file is a zip; anything else may be a pickle
                raise UntrustedArtifact(
                    "The MLflow sklearn flavor says skops, but its file is not a skops file; pickles are "
                    'never loaded here. Log it again with serialization_format="skops".',
                    errors=[FieldError("MLmodel.flavors.sklearn.pickled_model", "not a skops file")],
                    extra={"flavor": name, "format": "pickle"},
                )
    target = out / filename
    shutil.copyfile(source, target)
    return ImportedModel(
        framework=SUPPORTED[name],
        path=target,
        filename=filename,
        flavor=f"mlflow {name} flavor",
        configuration=_configuration(name, flavor, document),
        lineage=_lineage(name, flavor, document),
        schemas=signature_schemas(document.get("signature")),
    )


def _mlmodel(folder: Path) -> dict[str, Any]:
    path = folder / "MLmodel"
    if not path.is_file():
        raise _invalid("The archive has no MLmodel file: it is not an MLflow model folder.", "form.file")
    if path.stat().st_size > _MAX_MLMODEL_BYTES:
        raise _invalid("The MLmodel file is larger than 1 MiB.", "MLmodel")
    try:
        document = yaml.safe_load(path.read_text("utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise _invalid(f"The MLmodel file is not valid YAML: {exc}", "MLmodel") from exc
    if not isinstance(document, dict):
        raise _invalid("The MLmodel file is not a YAML mapping.", "MLmodel")
    return document


def _usable(name: str, flavor: Any, folder: Path) -> bool:
    if name not in SUPPORTED:
        return False
    if name == "sklearn":
        return isinstance(flavor, dict) and flavor.get("serialization_format") == "skops"
    if name == "pytorch":
        return isinstance(flavor, dict) and _torchscript(folder, flavor)
    return True


def _choose(flavors: dict[str, Any], framework: str, folder: Path) -> str:
    usable = [n for n in PRIORITY if n in flavors and _usable(n, flavors[n], folder)]
    if usable:
        own = [n for n in usable if SUPPORTED[n] == framework]
        return (own or usable)[0]
    for name in ("sklearn", "pytorch"):
        if name in flavors:
            flavor = flavors[name] if isinstance(flavors[name], dict) else {}
            what, how = PICKLED[name]
            fmt = str(flavor.get("serialization_format", "cloudpickle"))
            raise UntrustedArtifact(
                f"The MLflow {name} flavor {what.format(format=fmt)}; pickles are never loaded here. "
                f"To import it, {how}.",
                errors=[FieldError(f"MLmodel.flavors.{name}", "pickled model")],
                extra={"flavor": name, "format": "pickle"},
            )
    listed = ", ".join(sorted(flavors))
    raise _invalid(
        f"The MLmodel's flavors ({listed}) include none we can import; supported: onnx, xgboost, "
        "sklearn (skops), pytorch (TorchScript).",
        "MLmodel.flavors",
    )


def _torch_file(folder: Path, flavor: dict[str, Any]) -> Path:
    """``<model_data>/model.pth``, where ``mlflow.pytorch.save_model`` writes the module."""
    data = _member_folder(folder, flavor)
    path = data / "model.pth"
    if not path.is_file():
        raise _invalid(
            "The pytorch flavor's data/model.pth is not in the archive.", "MLmodel.flavors.pytorch"
        )
    return path


def _member_folder(folder: Path, flavor: dict[str, Any]) -> Path:
    raw = flavor.get("model_data", "data")
    relative = PurePosixPath(raw if isinstance(raw, str) and raw else "data")
    if relative.is_absolute() or ".." in relative.parts:
        raise _invalid(
            f"The pytorch flavor's 'model_data' ({raw!r}) points outside the folder.",
            "MLmodel.flavors.pytorch.model_data",
        )
    return folder.joinpath(*relative.parts)


def _torchscript(folder: Path, flavor: dict[str, Any]) -> bool:
    """Whether MLflow saved a scripted module (``torch.jit.save``: a zip with ``code/`` and
    ``constants.pkl``) rather than pickling a whole module with ``torch.save`` (a zip without them).
    Only the member names are read here; the torch runtime loads the archive in the inspector."""
    try:
        path = _torch_file(folder, flavor)
    except InvalidArtifact:
        return False
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        members = {n.split("/", 1)[1] for n in archive.namelist() if "/" in n}
    return "constants.pkl" in members and any(m.startswith("code/") for m in members)


def _member(folder: Path, flavor: dict[str, Any], key: str, name: str) -> Path:
    raw = flavor.get(key)
    where = f"MLmodel.flavors.{name}.{key}"
    if not isinstance(raw, str) or not raw:
        raise _invalid(f"The {name} flavor names no {key!r} file.", where)
    relative = PurePosixPath(raw)
    if relative.is_absolute() or ".." in relative.parts:
        raise _invalid(f"The {name} flavor's {key!r} ({raw!r}) points outside the folder.", where)
    path = folder.joinpath(*relative.parts)
    if not path.is_file():
        raise _invalid(f"The {name} flavor's file {raw!r} is not in the archive.", where)
    return path


def _configuration(name: str, flavor: dict[str, Any], document: dict[str, Any]) -> JsonObject:
    configuration: JsonObject = {}
    if name == "xgboost":
        model_class = str(flavor.get("model_class", ""))
        if model_class.endswith("Classifier"):
            configuration["task"] = "classification"
        elif model_class.endswith("Regressor"):
            configuration["task"] = "regression"
    return configuration


def _lineage(name: str, flavor: dict[str, Any], document: dict[str, Any]) -> JsonObject:
    lineage: JsonObject = {"importedFrom": "mlflow", "flavor": name}
    for key, field in (
        ("run_id", "mlflowRunId"),
        ("model_uuid", "mlflowModelUuid"),
        ("mlflow_version", "mlflowVersion"),
        ("artifact_path", "artifactPath"),
        ("utc_time_created", "createdAt"),
    ):
        if document.get(key) is not None:
            lineage[field] = str(document[key])
    for key in ("onnx_version", "xgb_version", "sklearn_version", "pytorch_version", "model_class"):
        if flavor.get(key) is not None:
            lineage[key] = str(flavor[key])
    if isinstance(document.get("metadata"), dict):
        lineage["metadata"] = json.loads(json.dumps(document["metadata"], default=str))
    schemas = signature_schemas(document.get("signature"))
    if schemas:
        lineage["schemas"] = schemas
    return lineage


_COLUMN_TYPES = {
    "double": "number",
    "float": "number",
    "integer": "integer",
    "long": "integer",
    "boolean": "boolean",
    "string": "string",
}
_TENSOR_DTYPES = {"float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool"}


def signature_schemas(signature: Any) -> JsonObject:
    """MLflow's signature as our ``inputSchema``/``outputSchema`` where it maps (column specs to a
    tabular schema, one tensor spec to a tensor schema); what does not map is left out. One named
    output column also gives ``outputSchema.name``: the target column training reads."""
    if not isinstance(signature, dict):
        return {}
    result: JsonObject = {}
    inputs = _specs(signature.get("inputs"))
    if inputs:
        schema = _input_schema(inputs)
        if schema:
            result["inputSchema"] = schema
    outputs = _specs(signature.get("outputs"))
    if outputs:
        schema = _input_schema(outputs, named_only=True)
        if schema:
            named = schema.get("features")
            if isinstance(named, list) and len(named) == 1:
                schema = {"name": named[0]["name"], **schema}
            result["outputSchema"] = schema
    return result


def _specs(raw: Any) -> list[dict[str, Any]]:
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            return []
    return [s for s in raw if isinstance(s, dict)] if isinstance(raw, list) else []


def _input_schema(specs: list[dict[str, Any]], named_only: bool = False) -> JsonObject | None:
    """Column specs as a tabular schema (unnamed columns named ``f<i>``, or, with ``named_only``,
    left unmapped), one tensor spec as a tensor schema; None for what does not map."""
    if len(specs) == 1 and specs[0].get("type") == "tensor":
        tensor = specs[0].get("tensor-spec") or {}
        dtype = str(tensor.get("dtype", "float32"))
        shape = tensor.get("shape")
        if dtype in _TENSOR_DTYPES and isinstance(shape, list) and len(shape) >= 2:
            return {"type": "tensor", "dtype": dtype, "shape": [int(d) for d in shape[1:]]}
        return None
    features = []
    for index, spec in enumerate(specs):
        kind = _COLUMN_TYPES.get(str(spec.get("type")))
        if kind is None or (named_only and not spec.get("name")):
            return None
        feature: JsonObject = {"name": str(spec.get("name", f"f{index}")), "type": kind}
        if spec.get("required") is False:
            feature["nullable"] = True
        features.append(feature)
    return {"type": "tabular", "features": features}


def _invalid(message: str, where: str) -> InvalidArtifact:
    return InvalidArtifact(message, errors=[FieldError(where, message.rstrip("."))])
