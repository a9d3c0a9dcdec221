"""Hugging Face-style folders: ``config.json`` beside ``model.onnx`` (or ``onnx/model.onnx``), or beside
``model.safetensors`` weights of an architecture we know how to build.

The ONNX graph is imported as it is. Safetensors weights are read with the ``safetensors`` package (a
header and raw tensors, no code) for the architectures in ``ARCHITECTURES`` only, and saved as a torch
state_dict that the torch runtime loads with ``weights_only=True`` into the same declared architecture.
``id2label`` becomes the version's classes, so predictions answer labels.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
from pathlib import Path
from typing import Any

from aiservice.application.imports import ImportedModel
from aiservice.domain.errors import FieldError, InvalidArtifact
from aiservice.domain.models import JsonObject

# The architectures a safetensors folder may declare, with how config.json describes them.
ARCHITECTURES = {
    "AiserviceMLP": '{"architectures": ["AiserviceMLP"], "layers": [inputs, hidden..., outputs], '
    '"activation": "relu"}',
}
_MAX_CONFIG_BYTES = 1 << 20
_MAX_LAYERS = 32
_MAX_WIDTH = 65_536


def read(folder: Path, out: Path) -> ImportedModel:
    config = _config(folder)
    architecture = _architecture(config)
    configuration: JsonObject = {}
    classes = _labels(config)
    if classes is not None:
        configuration["classes"] = classes
        configuration["task"] = "classification"
    lineage: JsonObject = {"importedFrom": "huggingface", "architecture": architecture}
    if config.get("model_type") is not None:
        lineage["modelType"] = str(config["model_type"])
    for candidate in (folder / "model.onnx", folder / "onnx" / "model.onnx"):
        if candidate.is_file():
            target = out / "model.onnx"
            shutil.copyfile(candidate, target)
            return ImportedModel(
                "onnx", target, "model.onnx", f"Hugging Face {architecture} (ONNX)", configuration, lineage
            )
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise InvalidArtifact(
            "The folder has config.json but neither model.onnx, onnx/model.onnx nor model.safetensors.",
            errors=[FieldError("form.file", "no model.onnx or model.safetensors")],
        )
    if architecture not in ARCHITECTURES:
        known = "; ".join(f"{name}: {shape}" for name, shape in ARCHITECTURES.items())
        raise InvalidArtifact(
            f"The architecture {architecture!r} is not one this service can build from safetensors "
            f"weights; known: {known}. Export the model to ONNX (model.onnx) to import it.",
            errors=[FieldError("config.json.architectures", f"unknown architecture {architecture!r}")],
            extra={"architecture": architecture, "known": sorted(ARCHITECTURES)},
        )
    layers = _mlp_layers(config)
    target = out / "model.pt"
    _mlp_state_dict(weights, layers, target)
    configuration["architecture"] = {
        "type": "mlp",
        "inputSize": layers[0],
        "hiddenSizes": layers[1:-1],
        "outputSize": layers[-1],
    }
    configuration["inputShape"] = [layers[0]]
    if classes is not None and len(classes) != layers[-1] and not (len(classes) == 2 and layers[-1] == 1):
        raise InvalidArtifact(
            f"config.json has {len(classes)} labels in id2label but the network has {layers[-1]} outputs.",
            errors=[FieldError("config.json.id2label", f"must have {layers[-1]} labels")],
        )
    return ImportedModel(
        "pytorch", target, "model.pt", f"Hugging Face {architecture}", configuration, lineage
    )


def _config(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.is_file():
        raise InvalidArtifact(
            "The archive has no config.json: it is not a Hugging Face-style folder.",
            errors=[FieldError("form.file", "no config.json")],
        )
    if path.stat().st_size > _MAX_CONFIG_BYTES:
        raise _bad("config.json", "is larger than 1 MiB")
    try:
        config = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _bad("config.json", f"is not JSON ({exc})") from exc
    if not isinstance(config, dict):
        raise _bad("config.json", "is not a JSON object")
    return config


def _architecture(config: dict[str, Any]) -> str:
    architectures = config.get("architectures")
    if isinstance(architectures, list) and architectures and isinstance(architectures[0], str):
        return architectures[0]
    if isinstance(config.get("model_type"), str):
        return str(config["model_type"])
    raise _bad("config.json.architectures", "must name the architecture (or give a model_type)")


def _labels(config: dict[str, Any]) -> list[Any] | None:
    raw = config.get("id2label")
    if raw is None:
        return None
    if not isinstance(raw, dict) or not raw:
        raise _bad("config.json.id2label", "must map class indexes to labels")
    try:
        indexed = {int(k): v for k, v in raw.items()}
    except ValueError as exc:
        raise _bad("config.json.id2label", "keys must be class indexes 0..K-1") from exc
    if sorted(indexed) != list(range(len(indexed))):
        raise _bad("config.json.id2label", "keys must be class indexes 0..K-1")
    return [indexed[i] for i in range(len(indexed))]


def _mlp_layers(config: dict[str, Any]) -> list[int]:
    layers = config.get("layers")
    if (
        not isinstance(layers, list)
        or not 2 <= len(layers) <= _MAX_LAYERS
        or not all(type(n) is int and 1 <= n <= _MAX_WIDTH for n in layers)
    ):
        raise _bad(
            "config.json.layers",
            f"must list 2 to {_MAX_LAYERS} layer widths from 1 to {_MAX_WIDTH}: [inputs, hidden..., outputs]",
        )
    activation = config.get("activation", "relu")
    if activation != "relu":
        raise _bad("config.json.activation", f"must be 'relu' (AiserviceMLP), not {activation!r}")
    return list(layers)


def _natural(key: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", key)]


def _mlp_state_dict(weights: Path, layers: list[int], target: Path) -> None:
    """Read the weights, match them layer by layer (in the natural order of their names) to the
    declared widths, and save them as the state_dict of ``nn.Sequential(Linear, ReLU, Linear...)``."""
    try:
        import torch
        from safetensors import SafetensorError
        from safetensors.torch import load_file
    except ImportError as exc:  # pragma: no cover - an install without aiservice[torch]
        raise InvalidArtifact(
            f"Importing safetensors weights needs aiservice[torch] ({exc.name} is missing)."
        ) from exc
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise InvalidArtifact(
            f"model.safetensors cannot be read: {exc}",
            errors=[FieldError("model.safetensors", "unreadable")],
        ) from exc
    prefixes: dict[str, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        prefix, _, kind = name.rpartition(".")
        if kind not in ("weight", "bias"):
            raise _bad("model.safetensors", f"holds {name!r}, which is neither a weight nor a bias")
        prefixes.setdefault(prefix, {})[kind] = tensor
    ordered = [prefixes[p] for p in sorted(prefixes, key=_natural)]
    expected = list(itertools.pairwise(layers))
    shapes = [
        (tuple(p["weight"].shape) if "weight" in p else None, tuple(p["bias"].shape) if "bias" in p else None)
        for p in ordered
    ]
    wanted = [((out, width_in), (out,)) for width_in, out in expected]
    if shapes != wanted:
        raise _bad(
            "model.safetensors",
            f"its tensors {shapes} do not fit the declared layers {layers} (weights [out, in], biases [out])",
        )
    state = {}
    for index, layer in enumerate(ordered):
        state[f"{2 * index}.weight"] = layer["weight"].to(torch.float32).contiguous()
        state[f"{2 * index}.bias"] = layer["bias"].to(torch.float32).contiguous()
    torch.save(state, target)


def _bad(where: str, problem: str) -> InvalidArtifact:
    return InvalidArtifact(f"{where} {problem}.", errors=[FieldError(where, problem)])
