"""PyTorch: TorchScript, ``torch.export`` programs (``.pt2``) and state_dicts of a declared architecture.

Nothing is ever unpickled beyond tensors: a state_dict is read with ``torch.load(weights_only=True)``,
so a whole pickled module is refused, and a ``.pt2`` archive is vetted before ``torch.export.load``
(which would otherwise fall back to full unpickling for some payloads, or load compiled code).
TorchScript is TorchScript code, not Python; it is loaded in the inspector's process first like any artifact.
Forward passes hold no shared state, so concurrent ``predict`` and ``explain`` calls need no lock.
"""

from __future__ import annotations

import io
import itertools
import json
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from aiservice.application.ports import Attributions, LoadSpec, Prediction
from aiservice.domain.errors import InvalidArtifact, UntrustedArtifact
from aiservice.domain.models import Framework
from aiservice.domain.signature import Signature, TensorSpec
from aiservice.infrastructure.runtimes.archives import ArchiveLimits, check_zip
from aiservice.infrastructure.runtimes.plugin import FrameworkPlugin, Trainer, network_for
from aiservice.infrastructure.runtimes.tasks import declared_task, network_prediction, scores_to_probabilities
from aiservice.infrastructure.training.catalog import validate_network

# Parts of a torch.export archive that hold compiled code or would be read with full unpickling.
PT2_REFUSED_DIRS = ("data/aotinductor/", "data/executorch/", "data/mtia", "xl_model_weights/")
PT2_TENSOR_PREFIXES = ("weight_", "tensor_")


class TorchModel:
    def __init__(self, module: Any, device: Any, signature: Signature, dtype: str) -> None:
        self.module = module
        self.signature = signature
        self._device = device
        self._dtype = np.dtype(dtype)
        classes = signature.classes
        self._classes = np.asarray(classes) if classes is not None else None

    def _tensor(self, batch: np.ndarray) -> Any:
        import torch

        return torch.from_numpy(np.ascontiguousarray(batch, dtype=self._dtype)).to(self._device)

    def predict(self, batch: np.ndarray) -> Prediction:
        import torch

        with torch.inference_mode():
            output = _first_tensor(self.module(self._tensor(batch))).float().cpu().numpy()
        return network_prediction(output, self.signature.task, self._classes, _probabilities)

    def explain(self, batch: np.ndarray) -> Attributions | None:
        """Gradient x input of each row's predicted class logit, or of the regression output."""
        import torch

        if self.signature.task == "other":
            return None
        inputs = self._tensor(batch).clone().requires_grad_(True)
        with torch.enable_grad():
            output = _first_tensor(self.module(inputs))
            if self.signature.task == "classification" and output.ndim > 1 and output.shape[1] > 1:
                output = output.gather(1, output.argmax(dim=1, keepdim=True))
            (gradient,) = torch.autograd.grad(output.sum(), inputs)
        return Attributions("gradient-x-input", (gradient * inputs).detach().cpu().numpy())


def _first_tensor(output: Any) -> Any:
    """Models may return a tensor, a tuple/list of them or a dict; the first tensor is the prediction."""
    while not hasattr(output, "detach"):
        if isinstance(output, Mapping):
            output = next(iter(output.values()))
        elif isinstance(output, list | tuple) and output:
            output = output[0]
        else:
            raise InvalidArtifact(f"The model returned {type(output).__name__}, not a tensor.")
    return output


def _probabilities(output: np.ndarray) -> np.ndarray:
    """A single output column is a binary logit (torch models end in a Linear layer)."""
    return scores_to_probabilities(output, one_column_logit=True)


class TorchRuntime:
    def __init__(self) -> None:
        self.archive_limits = ArchiveLimits()  # the operator's, set by the registry

    def available(self) -> str | None:
        try:
            import torch  # noqa: F401
        except ImportError as exc:
            return f"install aiservice[torch] ({exc.name} is missing)"
        return None

    def load(self, artifact: Path, spec: LoadSpec) -> TorchModel:
        import torch

        threads = spec.configuration.get("numThreads")
        if threads:
            torch.set_num_threads(int(threads))  # process-wide: the last load decides
        device = _device(spec.device)
        members = _zip_members(artifact, self.archive_limits)
        input_shape: tuple[int, ...] | None = None
        dtype = "float32"
        if "archive_format" in members:
            module, input_shape, dtype = _load_exported(artifact, members, device)
        elif "constants.pkl" in members or any(m.startswith("code/") for m in members):
            module = _load_torchscript(artifact, device)
        else:
            module = _load_state_dict(artifact, spec, device)
            input_shape = (-1, int(spec.configuration["architecture"]["inputSize"]))
        configured = spec.configuration.get("inputShape")
        if configured:
            input_shape = (-1, *(int(d) for d in configured))
        signature = torch_signature(module, device, spec, input_shape or (-1, -1), dtype)
        return TorchModel(module, device, signature, dtype)


def _device(name: str) -> Any:
    """The requested device when this machine has it, else the CPU (no error: the model still serves)."""
    import torch

    if name.startswith("cuda") and torch.cuda.is_available():
        return torch.device(name)
    if name == "mps" and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _zip_members(artifact: Path, limits: ArchiveLimits) -> set[str]:
    """Member names without the archive's root folder (torch names it after the saved file)."""
    if not zipfile.is_zipfile(artifact):
        return set()
    members = check_zip(artifact, limits)  # torch reads members by name: none may escape
    return {m.filename.split("/", 1)[1] for m in members if "/" in m.filename}


def _load_torchscript(artifact: Path, device: Any) -> Any:
    import torch

    try:
        with warnings.catch_warnings():
            # TorchScript is deprecated upstream but still what many teams ship; loading it is deliberate.
            warnings.filterwarnings(
                "ignore", message=r"`torch\.jit\.load` is deprecated", category=DeprecationWarning
            )
            module = torch.jit.load(str(artifact), map_location=device)  # type: ignore[no-untyped-call]
    except Exception as exc:
        raise InvalidArtifact(f"The TorchScript file cannot be loaded: {_first_line(exc)}") from exc
    return module.eval()


def _load_exported(artifact: Path, members: set[str], device: Any) -> tuple[Any, tuple[int, ...], str]:
    import torch

    _vet_pt2(artifact, members)
    try:
        with artifact.open("rb") as handle:
            program = torch.export.load(handle)
        if device.type != "cpu":
            from torch.export.passes import move_to_device_pass

            program = move_to_device_pass(program, device)
        module = program.module()
    except Exception as exc:
        raise InvalidArtifact(f"The torch.export program cannot be loaded: {_first_line(exc)}") from exc
    shape: tuple[int, ...] = (-1, -1)
    dtype = "float32"
    user_inputs = program.graph_signature.user_inputs
    placeholders = {n.name: n for n in program.graph.nodes if n.op == "placeholder"}
    if len(user_inputs) == 1 and user_inputs[0] in placeholders:
        value = placeholders[user_inputs[0]].meta.get("val")
        if value is not None and value.ndim >= 1:
            dims = [d if isinstance(d, int) else -1 for d in value.shape]
            shape = (-1, *dims[1:])
            dtype = str(value.dtype).removeprefix("torch.")
    return module, shape, dtype


def _vet_pt2(artifact: Path, members: set[str]) -> None:
    """Refuse archives whose payloads torch.export.load would unpickle fully, or that carry compiled code."""
    import torch

    def refuse(why: str) -> UntrustedArtifact:
        return UntrustedArtifact(f"The torch.export archive {why}; save it again with torch.export.save.")

    for name in sorted(members):
        if name.startswith(PT2_REFUSED_DIRS):
            raise refuse(f"holds {name!r}, which is compiled code or pickled data")
    with zipfile.ZipFile(artifact) as archive:
        root = archive.namelist()[0].split("/", 1)[0]
        for name in sorted(members):
            path = PurePosixPath(name)
            data_dir = str(path.parent) in ("data/weights", "data/constants")
            if data_dir and path.suffix == ".pt":
                raise refuse(f"uses the legacy pickled payload {name!r}")
            if data_dir and path.suffix == ".json":
                config = json.loads(archive.read(f"{root}/{name}")).get("config", {})
                for fqn, payload in config.items():
                    if payload.get("use_pickle") or not str(payload.get("path_name", "")).startswith(
                        PT2_TENSOR_PREFIXES
                    ):
                        raise refuse(f"stores {fqn!r} as a pickled object")
            if str(path.parent) == "data/sample_inputs":
                try:
                    torch.load(io.BytesIO(archive.read(f"{root}/{name}")), weights_only=True)
                except Exception as exc:
                    raise refuse(
                        f"has sample inputs that are more than tensors ({_first_line(exc)})"
                    ) from exc


def _load_state_dict(artifact: Path, spec: LoadSpec, device: Any) -> Any:
    import torch

    architecture = spec.configuration.get("architecture")
    if not isinstance(architecture, Mapping):
        raise InvalidArtifact(
            f"{spec.filename!r} is neither TorchScript nor a torch.export program. A state_dict needs "
            'configuration.architecture (e.g. {"type": "mlp", "inputSize": 4, "hiddenSizes": [16], '
            '"outputSize": 3}); a whole pickled module is never loaded.'
        )
    module = build_architecture(architecture)
    try:
        state = torch.load(artifact, map_location="cpu", weights_only=True)
    except Exception as exc:  # UnpicklingError: it holds more than tensors (a whole module, say)
        raise UntrustedArtifact(
            "The file holds more than tensors, so it is not loaded: save model.state_dict(), "
            f"not the model ({_first_line(exc)}).",
            extra={"format": "pickle"},
        ) from exc
    if not isinstance(state, Mapping) or not all(hasattr(v, "shape") for v in state.values()):
        raise InvalidArtifact("The file does not hold a state_dict (a mapping of names to tensors).")
    _load_weights(module, state)
    return module.to(device).eval()


def build_architecture(architecture: Mapping[str, Any]) -> Any:
    """The declared architectures a state_dict may belong to: today a ReLU multi-layer perceptron."""
    from torch import nn

    if architecture.get("type") != "mlp":
        raise InvalidArtifact(f"Unknown architecture type {architecture.get('type')!r}; supported: 'mlp'.")
    try:
        sizes = [
            int(architecture["inputSize"]),
            *(int(h) for h in architecture.get("hiddenSizes", [])),
            int(architecture["outputSize"]),
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidArtifact(
            f"The mlp architecture needs inputSize, hiddenSizes and outputSize ({exc})."
        ) from exc
    layers: list[Any] = []
    for index, (width_in, width_out) in enumerate(itertools.pairwise(sizes)):
        if index:
            layers.append(nn.ReLU())
        layers.append(nn.Linear(width_in, width_out))
    return nn.Sequential(*layers)


def _load_weights(module: Any, state: Mapping[str, Any]) -> None:
    """Load by name; a state_dict saved from a differently named module of the same shapes loads by order."""
    expected = module.state_dict()
    if set(state) != set(expected):
        shapes = [tuple(v.shape) for v in state.values()]
        if shapes != [tuple(v.shape) for v in expected.values()]:
            raise InvalidArtifact(
                f"The state_dict does not fit the declared architecture: it has {len(state)} tensors "
                f"{shapes}, the architecture {[tuple(v.shape) for v in expected.values()]}."
            )
        state = dict(zip(expected, state.values(), strict=True))
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise InvalidArtifact(
            f"The state_dict does not fit the declared architecture: {_first_line(exc)}"
        ) from exc


def torch_signature(
    module: Any, device: Any, spec: LoadSpec, input_shape: tuple[int, ...], dtype: str
) -> Signature:
    configuration = spec.configuration
    output_shape = _probe(module, device, input_shape, dtype)
    width = output_shape[1] if output_shape is not None and len(output_shape) == 2 else None
    if output_shape is not None and len(output_shape) == 1:
        width = 1
    task = declared_task(configuration, width)
    classes: tuple[Any, ...] | None = None
    outputs: tuple[TensorSpec, ...]
    if task == "classification":
        if configuration.get("classes"):
            classes = tuple(configuration["classes"])
        elif width is not None:
            classes = tuple(range(max(width, 2)))
        outputs = (
            TensorSpec(
                "label", "int64" if all(isinstance(c, int) for c in classes or ()) else "object", (-1,)
            ),
            TensorSpec("probabilities", "float32", (-1, len(classes) if classes else -1)),
        )
    elif task == "regression":
        outputs = (TensorSpec("prediction", "float32", (-1,)),)
    else:
        outputs = (TensorSpec("output", "float32", (-1, *output_shape[1:]) if output_shape else (-1,)),)
    return Signature(
        inputs=(TensorSpec("input", dtype, input_shape),),
        outputs=outputs,
        task=task,
        classes=classes,
        extra={"device": str(device), "module": type(module).__name__},
    )


def _probe(module: Any, device: Any, input_shape: tuple[int, ...], dtype: str) -> tuple[int, ...] | None:
    """The output shape on two rows of zeros, when the input shape is fully known; None otherwise."""
    import torch

    if any(d < 1 for d in input_shape[1:]):
        return None
    zeros = torch.zeros((2, *input_shape[1:]), dtype=getattr(torch, dtype), device=device)
    try:
        with torch.inference_mode():
            return tuple(_first_tensor(module(zeros)).shape)
    except Exception as exc:
        raise InvalidArtifact(
            f"The model fails on an input of shape {list(zeros.shape)}: {_first_line(exc)}"
        ) from exc


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def to_onnx(native: Any, sample: np.ndarray, signature: Signature) -> tuple[bytes, dict[str, Any]]:
    """``torch.onnx.export`` into one self-contained file; classifiers export their softmax probabilities."""
    import torch

    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "model.onnx"
        torch.onnx.export(
            native.module,
            (torch.from_numpy(sample[:2]),),
            str(target),
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
            dynamo=False,
            external_data=False,
        )
        data = target.read_bytes()
    if signature.task != "classification":
        return data, {}
    return _append_softmax(data), {"classes": list(signature.classes)} if signature.classes else {}


def _append_softmax(data: bytes) -> bytes:
    """Classifiers serve probabilities: end the exported graph (which gives logits) with a Softmax."""
    import onnx
    from onnx import helper

    model = onnx.load_from_string(data)
    logits = model.graph.output[0]
    model.graph.node.append(helper.make_node("Softmax", [logits.name], ["probabilities"], axis=1))
    probabilities = onnx.ValueInfoProto()
    probabilities.CopyFrom(logits)
    probabilities.name = "probabilities"
    del model.graph.output[:]
    model.graph.output.append(probabilities)
    return bytes(model.SerializeToString())


def _trains_on_gpu() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def _hold_threads(threads: int) -> Callable[[], None]:
    """torch's intra-op pool is its own (threadpoolctl does not reach it)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    return lambda: torch.set_num_threads(before)


def plugin() -> FrameworkPlugin:
    return FrameworkPlugin(
        name=Framework("pytorch"),
        runtime=TorchRuntime(),
        trainer=Trainer(
            "aiservice.infrastructure.training.torch_trainer",
            validate_network,
            streaming=True,
            epochs=True,
            data_parallel=True,
            gpu=_trains_on_gpu,
            threads=_hold_threads,
            default=network_for,
        ),
        to_onnx=to_onnx,
        accelerator="torch",
    )
