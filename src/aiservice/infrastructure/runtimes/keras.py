"""Keras and TensorFlow: ``.keras`` files, and SavedModel folders uploaded as a zip.

``.keras`` files load with ``keras.saving.load_model(compile=False, safe_mode=True)``, which refuses
lambda layers (they carry Python bytecode). A SavedModel zip is unpacked with bounds (member count,
unpacked size, no absolute paths, ``..`` or links) into a folder next to the artifact, which lives as long
as the model, and is served through its ``serving_default`` signature. A SavedModel is a TensorFlow
program: graphs with file or Python operations are refused, and the inspector loads it in its own process.
Keras 3 writes a SavedModel only with ``model.export()``; ``keras.models.load_model`` cannot read one.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import shutil
import sys
import tempfile
import weakref
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from aiservice.application.ports import Attributions, LoadSpec, Prediction
from aiservice.domain.errors import InvalidArtifact, UntrustedArtifact
from aiservice.domain.models import Framework
from aiservice.domain.signature import Column, ColumnType, Signature, TensorSpec
from aiservice.infrastructure.runtimes.archives import ArchiveLimits, extract_zip
from aiservice.infrastructure.runtimes.plugin import FrameworkPlugin, Trainer, network_for
from aiservice.infrastructure.runtimes.tasks import declared_task, network_prediction, scores_to_probabilities
from aiservice.infrastructure.training.catalog import validate_network

# TensorFlow operations that read or write files, or call back into Python, have no place in a served model.
REFUSED_OPS = frozenset(
    {
        "ReadFile",
        "WriteFile",
        "MatchingFiles",
        "PyFunc",
        "PyFuncStateless",
        "EagerPyFunc",
        "WholeFileReader",
        "WholeFileReaderV2",
        "TextLineDataset",
        "TFRecordDataset",
        "FixedLengthRecordDataset",
    }
)

log = logging.getLogger(__name__)
Forward = Callable[[Any], Any]  # a framework tensor in, a framework tensor out


class KerasModel:
    """A Keras model or a SavedModel signature, behind one forward function over numpy batches."""

    def __init__(
        self, forward: Forward, signature: Signature, dtype: str, keep: Any, tensorflow: bool
    ) -> None:
        self.signature = signature
        self._forward = forward
        self._tensorflow = tensorflow  # whether the forward function runs TensorFlow (for gradients)
        self._dtype = np.dtype(dtype)
        self._keep = keep  # the object that owns the variables the forward function reads
        classes = signature.classes
        self._classes = np.asarray(classes) if classes is not None else None

    def _input(self, batch: np.ndarray) -> Any:
        """The batch as one tensor; for a model of several one-value inputs (a functional model over
        named features), one [N, 1] tensor per column, in the model's input order."""
        if len(self.signature.inputs) > 1 and self.signature.columns:
            return [
                np.ascontiguousarray(batch[:, j : j + 1], dtype=spec.dtype)
                for j, spec in enumerate(self.signature.inputs)
            ]
        return np.ascontiguousarray(batch, dtype=self._dtype)

    def predict(self, batch: np.ndarray) -> Prediction:
        output = _to_numpy(self._forward(self._input(batch)))
        return network_prediction(output, self.signature.task, self._classes, scores_to_probabilities)

    def explain(self, batch: np.ndarray) -> Attributions | None:
        """Gradient x input of each row's predicted class output, or of the regression output."""
        if self.signature.task == "other" or not self._tensorflow or len(self.signature.inputs) > 1:
            return None
        import tensorflow as tf

        inputs = tf.constant(np.ascontiguousarray(batch, dtype=self._dtype))
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            output = tf.reshape(self._forward(inputs), (len(batch), -1))
            if self.signature.task == "classification" and output.shape[1] > 1:
                output = tf.gather(output, tf.argmax(output, axis=1), axis=1, batch_dims=1)
            target = tf.reduce_sum(output)
        gradient = tape.gradient(target, inputs)
        if gradient is None:  # a graph without gradients for these inputs
            return None
        return Attributions("gradient-x-input", (gradient * inputs).numpy())


def _to_numpy(tensor: Any) -> np.ndarray:
    # ``.numpy()`` first: numpy 2 warns on TensorFlow's ``__array__``, which lacks the ``copy`` keyword.
    if hasattr(tensor, "numpy"):
        value = tensor.detach().cpu().numpy() if hasattr(tensor, "detach") else tensor.numpy()
        return np.asarray(value)
    return np.asarray(tensor)


def _shape(dims: Any) -> tuple[int, ...]:
    return tuple(int(d) if d is not None and int(d) >= 0 else -1 for d in dims)


def keras_signature(
    spec: LoadSpec, inputs: list[TensorSpec], output_shape: tuple[int, ...], extra: dict[str, Any]
) -> Signature:
    """Task and classes as for torch: declared in configuration, else one output column is a regression."""
    configuration = spec.configuration
    configured = configuration.get("inputShape")
    if configured and len(inputs) == 1:
        inputs = [TensorSpec(inputs[0].name, inputs[0].dtype, (-1, *(int(d) for d in configured)))]
    width = output_shape[1] if len(output_shape) == 2 else (1 if len(output_shape) == 1 else None)
    task = declared_task(configuration, width)
    classes: tuple[Any, ...] | None = None
    outputs: tuple[TensorSpec, ...]
    if task == "classification":
        if configuration.get("classes"):
            classes = tuple(configuration["classes"])
        elif width is not None and width > 0:
            classes = tuple(range(max(width, 2)))
        label = "int64" if all(isinstance(c, int) for c in classes or ()) else "object"
        outputs = (
            TensorSpec("label", label, (-1,)),
            TensorSpec("probabilities", "float32", (-1, len(classes) if classes else -1)),
        )
    elif task == "regression":
        outputs = (TensorSpec("prediction", "float32", (-1,)),)
    else:
        outputs = (TensorSpec("output", "float32", (-1, *output_shape[1:])),)
    return Signature(
        inputs=tuple(inputs),
        outputs=outputs,
        task=task,
        classes=classes,
        extra=extra,
        columns=_columns(inputs),
    )


def _columns(inputs: list[TensorSpec]) -> tuple[Column, ...] | None:
    """A functional model of several one-value inputs takes a table whose columns are its named inputs."""
    if len(inputs) < 2 or not all(i.shape in ((-1,), (-1, 1)) for i in inputs):
        return None
    if any(i.dtype not in ("float16", "float32", "float64", "int32", "int64", "bool") for i in inputs):
        return None
    kinds: dict[str, ColumnType] = {"bool": "boolean", "int32": "integer", "int64": "integer"}
    return tuple(Column(i.name, kinds.get(i.dtype, "number")) for i in inputs)


class KerasRuntime:
    def __init__(self) -> None:
        self.archive_limits = ArchiveLimits()  # the operator's, set by the registry

    def available(self) -> str | None:
        missing = [name for name in ("keras", "tensorflow") if importlib.util.find_spec(name) is None]
        if "keras" in missing:
            return f"install aiservice[tensorflow] ({', '.join(missing)} missing)"
        try:
            _import_keras()
        except Exception as exc:  # keras present but no usable backend
            return f"keras cannot start: {exc}"
        return None

    def load(self, artifact: Path, spec: LoadSpec) -> KerasModel:
        if spec.filename.lower().endswith(".zip"):
            return self._load_saved_model(artifact, spec, self.archive_limits)
        if not zipfile.is_zipfile(artifact):
            raise InvalidArtifact(
                f"{spec.filename!r} is neither a .keras file nor a zipped SavedModel; save the model with "
                "model.save('model.keras'), or zip the folder written by model.export()."
            )
        return self._load_keras(artifact, spec)

    @staticmethod
    def _load_keras(artifact: Path, spec: LoadSpec) -> KerasModel:
        keras = _import_keras()
        _set_threads(spec)
        tensorflow = keras.backend.backend() == "tensorflow"
        device, placement = tensorflow_device(spec.device) if tensorflow else (None, {})
        try:
            # keras checks the extension, so hand it a name it accepts whatever the store calls the file.
            with _keras_named(artifact) as path, _pinned(device):
                model = keras.saving.load_model(path, compile=False, safe_mode=True)
        except ValueError as exc:
            if "safe_mode" in str(exc) or "lambda" in str(exc).lower():
                raise UntrustedArtifact(
                    f"The .keras file holds Python code (a Lambda layer), which is not loaded: {_first(exc)}"
                ) from exc
            raise InvalidArtifact(f"The .keras file cannot be loaded: {_first(exc)}") from exc
        except Exception as exc:
            raise InvalidArtifact(f"The .keras file cannot be loaded: {_first(exc)}") from exc
        try:
            inputs = [TensorSpec(t.name, str(t.dtype), _shape(t.shape)) for t in model.inputs]
            output_shape = _shape(model.outputs[0].shape)
        except (AttributeError, TypeError, IndexError, ValueError):  # a subclassed model never called
            inputs, output_shape = [TensorSpec("input", "float32", (-1, -1))], (-1,)
        dtype = inputs[0].dtype if len(inputs) == 1 else "float32"
        extra = {
            "format": "keras",
            "backend": keras.backend.backend(),
            "model": type(model).__name__,
            **placement,
        }

        def forward(batch: Any) -> Any:
            with _pinned(device):
                return model(batch, training=False)

        signature = keras_signature(spec, inputs, output_shape, extra)
        return KerasModel(forward, signature, dtype, model, tensorflow=tensorflow)

    @staticmethod
    def _load_saved_model(artifact: Path, spec: LoadSpec, limits: ArchiveLimits) -> KerasModel:
        if importlib.util.find_spec("tensorflow") is None:
            raise InvalidArtifact(
                "A SavedModel needs TensorFlow, which is not installed here; upload a .keras file."
            )
        _set_threads(spec)
        folder = unpack_zip(artifact, limits)
        try:
            model = _serve_saved_model(folder, spec)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        weakref.finalize(model, shutil.rmtree, folder, True)  # the folder lives as long as the model
        return model


def _serve_saved_model(folder: Path, spec: LoadSpec) -> KerasModel:
    import tensorflow as tf

    root = _saved_model_root(folder)
    _refuse_unsafe_ops(root)
    device, placement = tensorflow_device(spec.device)
    try:
        with _pinned(device):
            loaded = tf.saved_model.load(str(root))
    except Exception as exc:
        raise InvalidArtifact(f"The SavedModel cannot be loaded: {_first(exc)}") from exc
    function = loaded.signatures.get("serving_default")
    if function is None:
        raise InvalidArtifact("The SavedModel has no serving_default signature.")
    arguments = function.structured_input_signature[1]
    if len(arguments) != 1:
        raise InvalidArtifact(f"The serving signature takes {len(arguments)} inputs; one is supported.")
    ((name, tensor_spec),) = arguments.items()
    output_key = sorted(function.structured_outputs)[0]
    output_shape = _shape(function.structured_outputs[output_key].shape)
    inputs = [TensorSpec(name, tensor_spec.dtype.name, _shape(tensor_spec.shape))]

    def forward(batch: Any) -> Any:
        with _pinned(device):
            return function(**{name: tf.convert_to_tensor(batch)})[output_key]

    extra = {"format": "savedmodel", "output": output_key, **placement}
    signature = keras_signature(spec, inputs, output_shape, extra)
    return KerasModel(forward, signature, inputs[0].dtype, loaded, tensorflow=True)


def tensorflow_device(requested: str) -> tuple[str, dict[str, str]]:
    """The TensorFlow device a model loads and runs on, and what its signature reports about it: the
    first GPU when one is asked for (``gpu``, ``cuda``) and TensorFlow sees one; else the CPU, with the
    reason when a GPU was asked for. A CPU request pins to the CPU even where a GPU exists."""
    import tensorflow as tf

    if requested == "gpu" or requested.startswith("cuda"):
        gpus = tf.config.list_logical_devices("GPU")
        if gpus:
            return gpus[0].name, {"device": gpus[0].name}
        why = "a GPU was asked for (TENSORFLOW_BACKEND=gpu), but TensorFlow sees none here: served on the CPU"
        log.warning("%s", why)
        return "/CPU:0", {"device": "/CPU:0", "deviceReason": why}
    return "/CPU:0", {"device": "/CPU:0"}


@contextlib.contextmanager
def _pinned(device: str | None) -> Iterator[None]:
    """Variables made and operations run inside stay on ``device`` (None: where Keras puts them)."""
    if device is None:
        yield
        return
    import tensorflow as tf

    with tf.device(device):
        yield


def _import_keras() -> Any:
    """Keras on TensorFlow when it is installed; else on torch, chosen before keras is first imported."""
    if "keras" not in sys.modules and importlib.util.find_spec("tensorflow") is None:
        if importlib.util.find_spec("torch") is not None:
            os.environ.setdefault("KERAS_BACKEND", "torch")
    import keras

    return keras


def _set_threads(spec: LoadSpec) -> None:
    threads = spec.configuration.get("numThreads")
    if threads and importlib.util.find_spec("tensorflow") is not None:
        import tensorflow as tf

        try:  # process-wide, and only before TensorFlow runs its first operation
            tf.config.threading.set_intra_op_parallelism_threads(int(threads))
        except RuntimeError:
            pass


@contextlib.contextmanager
def _keras_named(artifact: Path) -> Iterator[Path]:
    """The artifact under a ``.keras`` name: itself when it has one, else a link in a folder beside it."""
    if artifact.suffix == ".keras":
        yield artifact
        return
    try:
        folder = Path(tempfile.mkdtemp(prefix=f".{artifact.name}.", dir=artifact.parent))
    except OSError:  # the artifact's folder is read-only
        folder = Path(tempfile.mkdtemp(prefix="aiservice-keras-"))
    try:
        named = folder / "model.keras"
        try:
            named.hardlink_to(artifact)
        except OSError:
            shutil.copyfile(artifact, named)
        yield named
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def unpack_zip(artifact: Path, limits: ArchiveLimits) -> Path:
    """Unpack a zip into a new folder next to it, refusing anything that could escape or exhaust it."""
    try:
        folder = Path(tempfile.mkdtemp(prefix=f".{artifact.name}.", suffix=".unpacked", dir=artifact.parent))
    except OSError:  # the artifact's folder is read-only
        folder = Path(tempfile.mkdtemp(prefix="aiservice-savedmodel-"))
    try:
        extract_zip(artifact, folder, limits)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder


def _saved_model_root(folder: Path) -> Path:
    found = sorted(folder.rglob("saved_model.pb"), key=lambda p: len(p.parts))
    if not found:
        raise InvalidArtifact("The zip holds no saved_model.pb; zip the folder written by model.export().")
    return found[0].parent


def _refuse_unsafe_ops(root: Path) -> None:
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel()
    try:
        saved.ParseFromString((root / "saved_model.pb").read_bytes())
    except Exception as exc:
        raise InvalidArtifact(f"saved_model.pb cannot be parsed: {_first(exc)}") from exc
    ops: set[str] = set()
    for graph in saved.meta_graphs:
        ops.update(node.op for node in graph.graph_def.node)
        for function in graph.graph_def.library.function:
            ops.update(node.op for node in function.node_def)
    refused = sorted(ops & REFUSED_OPS)
    if refused:
        raise UntrustedArtifact(
            f"The SavedModel uses operations that touch files or run Python: {', '.join(refused)}.",
            extra={"untrustedOps": refused},
        )


def _first(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def _trains_on_gpu() -> bool:
    from aiservice.infrastructure.training import keras_trainer

    return keras_trainer.gpu_count() > 0


def plugin() -> FrameworkPlugin:
    """``.keras`` files and SavedModels, trained as Keras networks; loads follow TENSORFLOW_BACKEND."""
    return FrameworkPlugin(
        name=Framework("keras"),
        runtime=KerasRuntime(),
        trainer=Trainer(
            "aiservice.infrastructure.training.keras_trainer",
            validate_network,
            streaming=True,
            epochs=True,
            gpu=_trains_on_gpu,
            default=network_for,
        ),
        accelerator="tensorflow",
    )


def tensorflow_plugin() -> FrameworkPlugin:
    """The same runtime under the name ``tensorflow`` (SavedModels registered as such); not trained."""
    return FrameworkPlugin(name=Framework("tensorflow"), runtime=KerasRuntime(), accelerator="tensorflow")
