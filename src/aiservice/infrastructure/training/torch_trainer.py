"""PyTorch: train an MLP (tables) or a CNN (channels-last images) and save it as TorchScript.

The saved module is what the torch runtime serves: it standardises tabular inputs itself, ends in a
softmax for classifiers (so the runtime reads probabilities, never guesses about logits) and maps a
regressor's output back to the target's scale. ``TrainedModel.configuration`` carries the task and the
classes, which the runtime needs to turn those outputs into labels.
"""

# No ``from __future__ import annotations``: TorchScript must see real types on the module classes.
import math
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

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

FILENAME = "model.pt"
EVAL_BATCH = 4096


class Standardise(nn.Module):
    """(x - mean) / std per feature, with the training data's statistics."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, mean: np.ndarray, std: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class ChannelsFirst(nn.Module):
    """Images arrive channels-last (N, H, W, C), as the service decodes them; convolutions want NCHW."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 3, 1, 2)


class Rescale(nn.Module):
    """A regressor's standardised output back on the target's scale."""

    def __init__(self, mean: float, std: float) -> None:
        super().__init__()
        self.mean = mean
        self.std = std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean


@dataclass
class FittedTorch:
    module: nn.Module  # the served module, on the CPU, in eval mode
    spec: TrainSpec
    classes: list[Any] | None
    params: dict[str, Any]
    device: str
    shape: list[int]

    def predict(self, X: np.ndarray) -> Prediction:
        with torch.inference_mode():
            output = self.module(torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))).numpy()
        if self.classes is None:
            return Prediction(values=output.reshape(len(output)))
        probabilities = output.astype(np.float64)
        labels = np.asarray(self.classes, dtype=object)[probabilities.argmax(axis=1)]
        return Prediction(values=labels, probabilities=probabilities)

    def save(self, out_dir: Path) -> TrainedModel:
        path = out_dir / FILENAME
        try:
            with warnings.catch_warnings():
                # TorchScript is deprecated upstream, but it is what the torch runtime loads without pickle.
                warnings.filterwarnings(
                    "ignore", r"`torch\.jit\.(script|save)` is deprecated", DeprecationWarning
                )
                torch.jit.script(self.module).save(str(path))  # type: ignore[no-untyped-call]
        except Exception as exc:
            raise TrainingError(
                "save", f"The network cannot be saved as TorchScript: {first_line(exc)}"
            ) from exc
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
) -> FittedTorch:
    """Train on tables in memory, or batch by batch when either ``train`` or ``validation`` is a stream."""
    data = prepare(spec, train, validation)
    inputs = data.inputs
    device = _device(spec.device)
    torch.manual_seed(spec.seed)
    classes = inputs.class_list
    core = _network(spec.algorithm, inputs, len(classes) if classes else 1)
    if inputs.target_scale is not None:
        trained = nn.Sequential(core, Rescale(*inputs.target_scale))  # trained on the target's own scale
        served = trained
    else:
        trained = core  # trained on logits; served with a softmax
        served = nn.Sequential(core, nn.Softmax(dim=1))
    trained.to(device)
    parallel = spec.data_parallel
    # Under Ray Train the model is wrapped for gradient averaging; `served` shares its parameters.
    model = parallel.prepare_model(trained) if parallel else trained
    epoch, validation_chunks = _feed(spec, data)
    with logged_warnings():
        _epochs(spec, model, device, epoch, validation_chunks, report)
    effective = {
        **inputs.params,
        "epochs": spec.epochs,
        "batchSize": spec.batch_size,
        "learningRate": spec.learning_rate,
        "seed": spec.seed,
        "optimizer": "adam",
    }
    if parallel:
        effective["dataParallelWorkers"] = parallel.world_size
    return FittedTorch(served.cpu().eval(), spec, classes, json_safe(effective), str(device), inputs.shape)


Minibatches = Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]]
Chunks = Callable[[], Iterable[tuple[np.ndarray, np.ndarray]] | None]


def _feed(spec: TrainSpec, data: InMemory | Streamed) -> tuple[Minibatches, Chunks]:
    """One epoch's training minibatches as tensors, and the validation rows in chunks (None without)."""
    classify = spec.task == "classification"
    parallel = spec.data_parallel
    if isinstance(data, Streamed):
        rng = np.random.default_rng(spec.seed)
        rank, every = (parallel.rank, parallel.world_size) if parallel else (0, 1)

        def stream() -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
            for index, (X, y) in enumerate(data.epoch(spec.batch_size, rng)):
                if index % every == rank:  # data-parallel: each process its own share of the batches
                    yield _features(X), _targets(y, classify)

        return stream, data.validation_chunks
    dataset = TensorDataset(_features(data.train.X), _targets(data.target.train, classify))
    shuffle = torch.Generator().manual_seed(spec.seed)
    loader = DataLoader(dataset, batch_size=spec.batch_size, shuffle=True, generator=shuffle)
    if parallel:  # a distributed sampler: each process its own share of the rows
        loader = parallel.prepare_loader(loader)
    validation, y_validation = data.validation, data.target.validation

    def chunks() -> Iterator[tuple[np.ndarray, np.ndarray]] | None:
        if validation is None or y_validation is None:
            return None
        starts = range(0, len(validation.X), EVAL_BATCH)
        return ((validation.X[s : s + EVAL_BATCH], y_validation[s : s + EVAL_BATCH]) for s in starts)

    return lambda: loader, chunks


def _device(name: str) -> torch.device:
    index = cuda_index(name)
    if index is None:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise TrainingError("device", NO_CUDA)
    if index >= torch.cuda.device_count():
        raise TrainingError(
            "device", f"cuda:{index} was requested; this machine has {torch.cuda.device_count()} GPU(s)."
        )
    return torch.device("cuda", index)


def _network(algorithm: str, inputs: NetworkInputs, outputs: int) -> nn.Sequential:
    params = inputs.params
    layers: list[nn.Module] = []
    if inputs.scale is not None:  # an MLP
        layers.append(Standardise(*inputs.scale))
        width = inputs.shape[0]
    else:
        height, breadth, channels_in = inputs.shape
        layers.append(ChannelsFirst())
        for channels in params["channels"]:
            layers += [nn.Conv2d(channels_in, channels, params["kernelSize"], padding="same"), nn.ReLU()]
            if min(height, breadth) >= 2:
                layers.append(nn.MaxPool2d(2))
                height, breadth = height // 2, breadth // 2
            channels_in = channels
        layers.append(nn.Flatten())
        width = channels_in * height * breadth
    for hidden in params["hiddenSizes"]:
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        if params["dropout"]:
            layers.append(nn.Dropout(params["dropout"]))
        width = hidden
    layers.append(nn.Linear(width, outputs))
    return nn.Sequential(*layers)


def _epochs(
    spec: TrainSpec,
    model: nn.Module,
    device: torch.device,
    minibatches: Minibatches,
    validation: Chunks,
    report: Callable[[Progress], None],
) -> None:
    classify = spec.task == "classification"
    loss_of: nn.Module = nn.CrossEntropyLoss() if classify else nn.MSELoss()
    optimizer = torch.optim.Adam(model.parameters(), lr=spec.learning_rate)
    for epoch in range(1, spec.epochs + 1):
        model.train()
        total = torch.zeros((), device=device)
        correct = torch.zeros((), device=device)
        rows = 0
        for features, labels in minibatches():
            features, labels = features.to(device), labels.to(device)
            optimizer.zero_grad(set_to_none=True)
            output = model(features)
            loss = loss_of(output, labels)
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(features)
            rows += len(features)
            if classify:
                correct += (output.detach().argmax(dim=1) == labels).sum()
        metrics = {"loss": float(total) / rows}
        if classify:
            metrics["accuracy"] = float(correct) / rows
        if not math.isfinite(metrics["loss"]):
            raise TrainingError(
                "fit", f"The loss became {metrics['loss']} in epoch {epoch}; try a lower learning rate."
            )
        chunks = validation()
        if chunks is not None:
            metrics.update(_evaluate(model, device, loss_of, chunks, classify))
        report(Progress(epoch=epoch, epochs=spec.epochs, metrics=metrics))


def _evaluate(
    model: nn.Module,
    device: torch.device,
    loss_of: nn.Module,
    chunks: Iterable[tuple[np.ndarray, np.ndarray]],
    classify: bool,
) -> dict[str, float]:
    """Validation loss and accuracy (or RMSE) over every chunk; nothing when there are no rows."""
    model.eval()
    total = 0.0
    correct = 0
    rows = 0
    with torch.no_grad():
        for X, y in chunks:
            features, labels = _features(X).to(device), _targets(y, classify).to(device)
            output = model(features)
            total += float(loss_of(output, labels)) * len(features)
            rows += len(features)
            if classify:
                correct += int((output.argmax(dim=1) == labels).sum())
    if rows == 0:
        return {}
    loss = total / rows
    if classify:
        return {"val_loss": loss, "val_accuracy": correct / rows}
    return {"val_loss": loss, "val_rmse": math.sqrt(loss)}


def _features(X: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))


def _targets(y: np.ndarray, classify: bool) -> torch.Tensor:
    if classify:
        return torch.from_numpy(np.asarray(y, dtype=np.int64))
    return torch.from_numpy(np.asarray(y, dtype=np.float32).reshape(-1, 1))
