"""Keras 3: train an MLP (tables) or a CNN (channels-last images) and save a ``.keras`` file.

The saved model is what the keras runtime serves with ``safe_mode``: built from stock layers only (no
Lambda), it standardises tabular inputs with a Normalization layer, ends in a softmax for classifiers and
rescales a regressor's output to the target's scale. ``TrainedModel.configuration`` carries the task and
the classes the runtime needs to turn outputs into labels.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from aiservice.application.ports import Prediction
from aiservice.infrastructure.training.common import (
    NO_CUDA,
    InMemory,
    NetworkInputs,
    Streamed,
    cuda_index,
    first_line,
    json_safe,
    logged_warnings,
    prepare,
    served_configuration,
)
from aiservice.infrastructure.training.spec import Data, Progress, TrainedModel, TrainingError, TrainSpec

FILENAME = "model.keras"


@dataclass
class FittedKeras:
    model: Any  # keras.Model
    spec: TrainSpec
    classes: list[Any] | None
    params: dict[str, Any]
    device: str
    shape: list[int]

    def predict(self, X: np.ndarray) -> Prediction:
        batch = np.ascontiguousarray(X, dtype=np.float32)
        output = np.asarray(keras.ops.convert_to_numpy(self.model(batch, training=False)))
        if self.classes is None:
            return Prediction(values=output.reshape(len(output)))
        probabilities = output.astype(np.float64)
        labels = np.asarray(self.classes, dtype=object)[probabilities.argmax(axis=1)]
        return Prediction(values=labels, probabilities=probabilities)

    def save(self, out_dir: Path) -> TrainedModel:
        path = out_dir / FILENAME
        try:
            with warnings.catch_warnings():
                # Keras's saver hands TensorFlow tensors to numpy 2, which warns about a copy keyword.
                warnings.filterwarnings("ignore", "__array__ implementation", DeprecationWarning)
                self.model.save(path)
        except Exception as exc:
            raise TrainingError("save", f"The model cannot be saved as .keras: {first_line(exc)}") from exc
        return TrainedModel(
            path=path,
            filename=FILENAME,
            classes=self.classes,
            params=self.params,
            device=self.device,
            configuration=served_configuration(self.spec, self.classes, self.shape),
        )


def fit(
    spec: TrainSpec, train: Data, validation: Data | None, report: Callable[[Progress], None]
) -> FittedKeras:
    """Train on tables in memory, or batch by batch when either ``train`` or ``validation`` is a stream."""
    data = prepare(spec, train, validation)
    inputs = data.inputs
    device, keras_device = _device(spec.device)
    classes = inputs.class_list
    keras.utils.set_random_seed(spec.seed)
    with keras.device(keras_device):
        model = _network(spec, inputs)
        with logged_warnings():
            if isinstance(data, InMemory):
                _fit_tables(model, spec, data, report)
            else:
                _fit_stream(model, spec, data, report)
    effective = {
        **inputs.params,
        "epochs": spec.epochs,
        "batchSize": spec.batch_size,
        "learningRate": spec.learning_rate,
        "seed": spec.seed,
        "optimizer": "adam",
        "backend": keras.backend.backend(),
    }
    return FittedKeras(model, spec, classes, json_safe(effective), device, inputs.shape)


def _fit_tables(model: Any, spec: TrainSpec, data: InMemory, report: Callable[[Progress], None]) -> None:
    validation_data = None
    if data.validation is not None:
        validation_data = (np.asarray(data.validation.X, dtype=np.float32), data.target.validation)
    model.fit(
        np.asarray(data.train.X, dtype=np.float32),
        data.target.train,
        batch_size=spec.batch_size,
        epochs=spec.epochs,
        validation_data=validation_data,
        shuffle=True,
        verbose=0,
        callbacks=[_ReportEpochs(report, spec.epochs)],
    )


def _fit_stream(model: Any, spec: TrainSpec, data: Streamed, report: Callable[[Progress], None]) -> None:
    """One ``fit`` call per epoch, each over a fresh pass of the stream (a generator ends with its pass).

    Errors met while reading (a bad value, an unknown label) are kept by ``_guarded`` and raised here as
    they are: inside ``fit`` TensorFlow would turn them into a graph error without their stage."""
    rng = np.random.default_rng(spec.seed)
    for epoch in range(spec.epochs):
        errors: list[Exception] = []
        chunks = data.validation_chunks()
        validation = _nonempty(_guarded(chunks, errors)) if chunks is not None else None
        if errors:
            raise errors[0]
        with warnings.catch_warnings():
            # Keras learns a generator's length when it ends, and says so: here every pass ends.
            warnings.filterwarnings("ignore", "Your input ran out of data", UserWarning)
            try:
                model.fit(
                    _guarded(data.epoch(spec.batch_size, rng), errors),
                    epochs=epoch + 1,
                    initial_epoch=epoch,
                    validation_data=validation,
                    shuffle=False,  # shuffled by the stream, within a buffer
                    verbose=0,
                    callbacks=[_ReportEpochs(report, spec.epochs, errors)],
                )
            except Exception:
                if not errors:
                    raise
        if errors:
            raise errors[0]


Pairs = Iterator[tuple[np.ndarray, np.ndarray]]


def _guarded(pairs: Pairs, errors: list[Exception]) -> Pairs:
    """``pairs``, ending early with the first error it meets appended to ``errors``."""
    try:
        yield from pairs
    except Exception as exc:
        errors.append(exc)


def _nonempty(pairs: Pairs) -> Pairs | None:
    """``pairs`` unchanged, or None when it has none (a validation split can hold out no rows)."""
    first = next(pairs, None)
    if first is None:
        return None

    def whole() -> Pairs:
        yield first
        yield from pairs

    return whole()


def _device(name: str) -> tuple[str, str]:
    """The device to report ("cpu", "cuda:N") and its Keras name ("cpu:0", "gpu:N")."""
    index = cuda_index(name)
    if index is None:
        return "cpu", "cpu:0"
    gpus = gpu_count()
    if gpus == 0:
        raise TrainingError("device", NO_CUDA)
    if index >= gpus:
        raise TrainingError("device", f"cuda:{index} was requested; this machine has {gpus} GPU(s).")
    return f"cuda:{index}", f"gpu:{index}"


def gpu_count() -> int:
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return len(tf.config.list_physical_devices("GPU"))
    if backend == "torch":
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    return 0  # jax and others: not supported for GPU training here


def _network(spec: TrainSpec, data: NetworkInputs) -> Any:
    layers = keras.layers
    params = data.params
    inputs = keras.Input(shape=tuple(data.shape), dtype="float32")
    x = inputs
    if data.scale is not None:  # an MLP
        mean, std = data.scale
        x = layers.Normalization(mean=mean.tolist(), variance=(std**2).tolist())(x)
    else:
        height, breadth = data.shape[:2]
        for channels in params["channels"]:
            x = layers.Conv2D(channels, params["kernelSize"], padding="same", activation="relu")(x)
            if min(height, breadth) >= 2:
                x = layers.MaxPooling2D(2)(x)
                height, breadth = height // 2, breadth // 2
        x = layers.Flatten()(x)
    for hidden in params["hiddenSizes"]:
        x = layers.Dense(hidden, activation="relu")(x)
        if params["dropout"]:
            x = layers.Dropout(params["dropout"], seed=spec.seed)(x)
    optimizer = keras.optimizers.Adam(learning_rate=spec.learning_rate)
    if data.classes is not None:
        outputs = layers.Dense(len(data.classes), activation="softmax")(x)
        model = keras.Model(inputs, outputs)
        model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        return model
    # Trained on the target's own scale: the rescaling is part of the model, so the loss is plain MSE.
    offset, scale = data.target_scale or (0.0, 1.0)
    outputs = layers.Rescaling(scale=scale, offset=offset)(layers.Dense(1)(x))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=optimizer, loss="mse", metrics=[keras.metrics.RootMeanSquaredError(name="rmse")])
    return model


class _ReportEpochs(keras.callbacks.Callback):  # type: ignore[misc]
    """Reports Keras's epoch logs (loss, accuracy or rmse, and their val_ twins); stops on a NaN loss."""

    def __init__(
        self, report: Callable[[Progress], None], epochs: int, errors: list[Exception] | None = None
    ) -> None:
        super().__init__()
        self._report = report
        self._epochs = epochs
        self._errors = (
            errors if errors is not None else []
        )  # a stream's reading errors: that epoch is not reported

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self._errors:
            return
        metrics = {name: float(value) for name, value in (logs or {}).items()}
        loss = metrics.get("loss", 0.0)
        if not math.isfinite(loss):
            raise TrainingError(
                "fit", f"The loss became {loss} in epoch {epoch + 1}; try a lower learning rate."
            )
        self._report(Progress(epoch=epoch + 1, epochs=self._epochs, metrics=metrics))
