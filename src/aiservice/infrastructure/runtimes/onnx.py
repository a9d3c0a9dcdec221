"""ONNX: any ``.onnx`` graph through onnxruntime, with sklearn-converted classifiers understood.

skl2onnx and onnxmltools give classifiers a ``label`` output and a probability output: a tensor
(converted with ``zipmap=False``, the fast form) or a sequence of {class: probability} maps (ZipMap).
Both become an [N, C] array. Graphs that keep weights in external files are refused: onnxruntime
would read those files from next to the artifact, where other artifacts live.
``InferenceSession.run`` is thread-safe, so concurrent ``predict`` calls need no lock.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from aiservice.application.ports import Attributions, LoadSpec, Prediction
from aiservice.domain.errors import InvalidArtifact
from aiservice.domain.models import Framework
from aiservice.domain.signature import Column, Signature, Task, TensorSpec
from aiservice.infrastructure.runtimes.plugin import FrameworkPlugin
from aiservice.infrastructure.runtimes.tasks import declared_task, scores_to_probabilities

ONNX_DTYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(float16)": "float16",
    "tensor(int8)": "int8",
    "tensor(int16)": "int16",
    "tensor(int32)": "int32",
    "tensor(int64)": "int64",
    "tensor(uint8)": "uint8",
    "tensor(uint16)": "uint16",
    "tensor(uint32)": "uint32",
    "tensor(uint64)": "uint64",
    "tensor(bool)": "bool",
    "tensor(string)": "object",
}
# Operators of the ai.onnx.ml domain that carry their class labels as attributes.
LABEL_ATTRIBUTES = ("classlabels_int64s", "classlabels_strings", "classlabels_ints")


def numpy_dtype(onnx_type: str) -> str:
    return ONNX_DTYPES.get(onnx_type, "object")


def _shape(dims: Any) -> tuple[int, ...]:
    """Symbolic or unknown dimensions (a name, None) accept any size."""
    return tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (dims or []))


class OnnxModel:
    def __init__(
        self,
        session: Any,
        signature: Signature,
        label: int | None,
        proba: int | None,
        relabel: bool,
        scores: bool = False,
    ) -> None:
        self.session = session
        self.signature = signature
        self._inputs = [
            (i.name, np.dtype(numpy_dtype(i.type)), len(i.shape or ())) for i in session.get_inputs()
        ]
        self._label = label
        self._proba = proba
        # Configured classes name the probability columns; the graph's own labels would not match them.
        self._relabel = relabel or label is None
        self._scores = scores  # the probability output is raw class scores, to be made probabilities

    def _feeds(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """One tensor for a single-input graph; else the batch's column j for the graph's input j
        (a graph converted from a DataFrame takes one [N, 1] input per column)."""
        if len(self._inputs) == 1:
            name, dtype, _rank = self._inputs[0]
            return {name: batch.astype(dtype, copy=False)}
        feeds = {}
        for j, (name, dtype, rank) in enumerate(self._inputs):
            column = batch[:, j]
            if dtype.kind == "O":
                column = np.array([_text(v) for v in column.tolist()], dtype=object)
            else:
                column = column.astype(dtype)
            feeds[name] = column.reshape(-1, 1) if rank == 2 else column
        return feeds

    def predict(self, batch: np.ndarray) -> Prediction:
        outputs = self.session.run(None, self._feeds(batch))
        if self._proba is not None:
            output = outputs[self._proba]
            probabilities = (
                scores_to_probabilities(np.asarray(output)) if self._scores else self._probabilities(output)
            )
            if self._relabel:
                classes = np.asarray(self.signature.classes or range(probabilities.shape[1]))
                values = classes[probabilities.argmax(axis=1)]
            else:
                values = np.asarray(outputs[self._label])
            return Prediction(values=values, probabilities=probabilities)
        first = np.asarray(outputs[0])
        if self.signature.task == "regression":
            return Prediction(values=first.reshape(len(first)))
        return Prediction(values=first)

    def _probabilities(self, output: Any) -> np.ndarray:
        if not isinstance(output, list):  # zipmap disabled: already [N, C]
            # A float32 tree ensemble's sums can stray a few ulps outside [0, 1] (-1.2e-07, say).
            clipped: np.ndarray = np.clip(np.asarray(output), 0.0, 1.0)
            return clipped
        if not output:
            return np.zeros((0, len(self.signature.classes or ())), dtype=np.float32)
        keys = list(output[0])
        if self.signature.classes is not None and set(self.signature.classes) == set(keys):
            keys = list(self.signature.classes)
        return np.array([[row[k] for k in keys] for row in output], dtype=np.float32)

    def explain(self, batch: np.ndarray) -> Attributions | None:
        return None


def _text(value: Any) -> str:
    """A string input's element: text as it is, a missing value as empty text."""
    if isinstance(value, str):
        return value
    return "" if value is None or (isinstance(value, float) and value != value) else str(value)


def _declared_classifier(session: Any, spec: LoadSpec) -> bool:
    """A graph with one float output that the model's configuration (its category, its classes, or
    ``task``) declares a classifier: its output is class scores."""
    outputs = session.get_outputs()
    if len(outputs) != 1 or not numpy_dtype(outputs[0].type).startswith("float"):
        return False
    shape = _shape(outputs[0].shape)
    width = shape[1] if len(shape) == 2 else None
    return declared_task(spec.configuration, width) == "classification"


def _find_outputs(outputs: list[Any]) -> tuple[int | None, int | None]:
    """Indexes of the label and probability outputs of a converted classifier, when there are any."""
    label = proba = None
    for index, output in enumerate(outputs):
        name = output.name.lower()
        if proba is None and ("prob" in name or output.type.startswith("seq(map")):
            proba = index
        elif label is None and "label" in name:
            label = index
    return (label, proba) if proba is not None else (None, None)


def _graph_class_labels(model: Any) -> tuple[Any, ...] | None:
    """Class labels from the ZipMap (or classifier) node of a converted sklearn/xgboost model."""
    found: dict[str, tuple[Any, ...]] = {}
    for node in _nodes(model.graph):
        for attribute in node.attribute:
            if attribute.name in LABEL_ATTRIBUTES:
                values = attribute.strings or attribute.ints
                labels = tuple(v.decode() if isinstance(v, bytes) else int(v) for v in values)
                found.setdefault(node.op_type, labels)
    return found.get("ZipMap") or next(iter(found.values()), None)


def _nodes(graph: Any) -> Iterator[Any]:
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            if attribute.g.node:
                yield from _nodes(attribute.g)
            for subgraph in attribute.graphs:
                yield from _nodes(subgraph)


def _uses_external_data(model: Any) -> bool:
    from onnx import TensorProto

    def tensors(graph: Any) -> Iterator[Any]:
        yield from graph.initializer
        yield from (sparse.values for sparse in graph.sparse_initializer)
        for node in graph.node:
            for attribute in node.attribute:
                yield attribute.t
                yield from attribute.tensors
                if attribute.g.node:
                    yield from tensors(attribute.g)
                for subgraph in attribute.graphs:
                    yield from tensors(subgraph)

    return any(t.data_location == TensorProto.EXTERNAL for t in tensors(model.graph))


def onnx_signature(
    session: Any,
    label: int | None,
    proba: int | None,
    classes: tuple[Any, ...] | None,
    model: Any,
    requested_device: str = "cpu",
) -> Signature:
    inputs = tuple(TensorSpec(i.name, numpy_dtype(i.type), _shape(i.shape)) for i in session.get_inputs())
    outputs = session.get_outputs()
    task: Task = "other"
    specs = [TensorSpec(o.name, numpy_dtype(o.type), _shape(o.shape)) for o in outputs]
    if proba is not None:
        task = "classification"
        width = len(classes) if classes is not None else -1
        specs[proba] = TensorSpec(outputs[proba].name, "float32", (-1, width))
    elif len(outputs) == 1 and numpy_dtype(outputs[0].type).startswith("float"):
        shape = _shape(outputs[0].shape)
        if len(shape) == 1 or (len(shape) == 2 and shape[1] == 1):
            task = "regression"
    return Signature(
        inputs=inputs,
        outputs=tuple(specs),
        task=task,
        classes=classes if task == "classification" else None,
        extra=placement(requested_device, list(session.get_providers())),
        columns=_columns(inputs, model),
    )


def _columns(inputs: tuple[TensorSpec, ...], model: Any) -> tuple[Column, ...] | None:
    """A graph of several one-value inputs (converted from a DataFrame: one per column) takes a table
    whose columns are its inputs, named and typed as they are."""
    if len(inputs) < 2 or not all(len(i.shape) in (1, 2) and i.shape[1:] in ((), (1,)) for i in inputs):
        return None
    columns = []
    for spec in inputs:
        if spec.dtype == "object":
            values = _categories(model, spec.name)
            columns.append(Column(spec.name, "category" if values else "string", values))
        elif spec.dtype == "bool":
            columns.append(Column(spec.name, "boolean"))
        else:
            columns.append(
                Column(spec.name, "integer" if spec.dtype.startswith(("int", "uint")) else "number")
            )
    return tuple(columns)


def _categories(model: Any, name: str) -> tuple[Any, ...] | None:
    """The categories a strict OneHotEncoder node reading the input ``name`` (directly, or through
    casts and reshapes) knows; None when no such node says."""
    passing = {"Cast", "Identity", "Reshape", "Flatten"}
    reached = {name}
    for node in model.graph.node:
        if not reached.intersection(node.input[:1]):
            continue
        if node.op_type in passing:
            reached.update(node.output)
        elif node.op_type == "OneHotEncoder":
            attributes = {a.name: a for a in node.attribute}
            if attributes["zeros"].i if "zeros" in attributes else 1:
                return None  # unknown values are encoded as zeros (the default): any text is fine
            known = attributes.get("cats_strings")
            return tuple(v.decode() for v in known.strings) if known is not None else None
    return None


class OnnxRuntime:
    def available(self) -> str | None:
        try:
            import onnx  # noqa: F401
            import onnxruntime  # noqa: F401
        except ImportError as exc:
            return f"install aiservice[onnx] ({exc.name} is missing)"
        return None

    def load(self, artifact: Path, spec: LoadSpec) -> OnnxModel:
        import onnx

        try:
            proto = onnx.load_model(artifact, load_external_data=False)
        except Exception as exc:  # protobuf's DecodeError, or onnx's own checks
            raise InvalidArtifact(f"{spec.filename!r} is not an ONNX model: {_first_line(exc)}") from exc
        if _uses_external_data(proto):
            raise InvalidArtifact(
                "The ONNX graph keeps its weights in external files; save it as one self-contained file."
            )
        session = self._session(artifact, spec)
        label, proba = _find_outputs(session.get_outputs())
        scores = proba is None and _declared_classifier(session, spec)
        if scores:
            proba = 0  # a network's class scores (logits, say): read as a classifier's, as torch's are
        classes = None
        if proba is not None:
            configured = spec.configuration.get("classes")
            classes = tuple(configured) if configured else _graph_class_labels(proto)
            if classes is None:
                width = _shape(session.get_outputs()[proba].shape)[-1:]
                classes = tuple(range(width[0])) if width and width[0] > 0 else None
        signature = onnx_signature(session, label, proba, classes, proto, spec.device)
        relabel = bool(spec.configuration.get("classes"))
        return OnnxModel(session, signature, label, proba, relabel, scores)

    @staticmethod
    def _session(artifact: Path, spec: LoadSpec) -> Any:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: no per-session chatter on stderr
        threads = spec.configuration.get("numThreads")
        if threads:
            options.intra_op_num_threads = int(threads)
        try:
            return ort.InferenceSession(str(artifact), options, providers=_providers(spec.device))
        except Exception as exc:  # InvalidProtobuf, Fail, NotImplemented...: the graph cannot run here
            raise InvalidArtifact(f"onnxruntime cannot load the model: {_first_line(exc)}") from exc


def _providers(device: str) -> list[str]:
    """CUDA first when the load asks for a GPU and this onnxruntime has one; CPU always as the fallback."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    wanted = ["CUDAExecutionProvider"] if device.startswith("cuda") else []
    return [p for p in wanted if p in available] + ["CPUExecutionProvider"]


def placement(requested: str, providers: list[str]) -> dict[str, Any]:
    """What a signature reports about where the graph runs: the session's providers, the device, and
    why it is the CPU when CUDA was asked for (a compiled PyTorch version under PYTORCH_BACKEND=cuda)."""
    device = "cuda" if "CUDAExecutionProvider" in providers else "cpu"
    found: dict[str, Any] = {"providers": providers, "device": device}
    if requested.startswith("cuda") and device == "cpu":
        found["deviceReason"] = (
            f"{requested} was asked for, but this onnxruntime has no CUDAExecutionProvider "
            "(install onnxruntime-gpu): served on the CPU"
        )
    return found


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def plugin() -> FrameworkPlugin:
    """ONNX graphs as uploaded (and the compiled form of other frameworks' versions): the device of
    the framework a compiled version came from picks the execution provider."""
    return FrameworkPlugin(name=Framework.ONNX, runtime=OnnxRuntime(), preload=("onnxruntime",))
