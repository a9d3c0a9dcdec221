"""PyTorch runtime: TorchScript, torch.export and state_dicts predict like torch; pickles are refused."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from sklearn.datasets import load_iris
from torch import nn

from aiservice.application.ports import LoadSpec
from aiservice.domain.errors import InvalidArtifact, UntrustedArtifact
from aiservice.domain.models import Framework
from aiservice.infrastructure.runtimes.inspector import SubprocessArtifactInspector
from aiservice.infrastructure.runtimes.torch import TorchRuntime

X, _ = load_iris(return_X_y=True)
X = X.astype(np.float32)
MLP = {"type": "mlp", "inputSize": 4, "hiddenSizes": [8], "outputSize": 3}
TORCHSCRIPT_DEPRECATED = "ignore:`torch.jit.script` is deprecated:DeprecationWarning"


def network(outputs: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, outputs)).eval()


def expected(module: nn.Module, batch: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        result: np.ndarray = module(torch.from_numpy(batch)).numpy()
    return result


def spec(filename: str = "model.pt", **configuration: Any) -> LoadSpec:
    return LoadSpec(Framework("pytorch"), filename, configuration=configuration)


def script(tmp_path: Path, module: nn.Module) -> Path:
    path = tmp_path / "model.pt"
    torch.jit.script(module).save(str(path))
    return path


def export(tmp_path: Path, module: nn.Module) -> Path:
    path = tmp_path / "model.pt2"
    batch = torch.export.Dim("batch")
    program = torch.export.export(module, (torch.from_numpy(X[:2]),), dynamic_shapes=({0: batch},))
    torch.export.save(program, path)
    return path


@pytest.mark.filterwarnings(TORCHSCRIPT_DEPRECATED)
def test_torchscript_classifier_gives_softmax_probabilities(tmp_path: Path) -> None:
    module = network()
    model = TorchRuntime().load(script(tmp_path, module), spec(task="classification", inputShape=[4]))
    prediction = model.predict(X[:10])
    probabilities = torch.softmax(torch.from_numpy(expected(module, X[:10])), dim=1).numpy()
    np.testing.assert_allclose(prediction.probabilities, probabilities, rtol=1e-5)  # type: ignore[arg-type]
    np.testing.assert_array_equal(prediction.values, probabilities.argmax(axis=1))
    assert (model.signature.task, model.signature.classes, model.signature.n_features) == (
        "classification",
        (0, 1, 2),
        4,
    )


def test_exported_program_regression_is_flattened_with_its_shape_read_from_the_graph(tmp_path: Path) -> None:
    module = network(outputs=1)
    model = TorchRuntime().load(export(tmp_path, module), spec("model.pt2", numThreads=1))
    prediction = model.predict(X[:10])
    np.testing.assert_allclose(prediction.values, expected(module, X[:10]).ravel(), rtol=1e-6)
    assert (model.signature.task, model.signature.n_features) == ("regression", 4)


def test_exported_program_with_configured_classes_labels_its_rows(tmp_path: Path) -> None:
    module = network()
    model = TorchRuntime().load(export(tmp_path, module), spec("model.pt2", classes=["a", "b", "c"]))
    prediction = model.predict(X[:10])
    np.testing.assert_array_equal(
        prediction.values, np.array(["a", "b", "c"])[expected(module, X[:10]).argmax(1)]
    )
    assert model.signature.classes == ("a", "b", "c")


def test_state_dict_loads_into_the_declared_mlp(tmp_path: Path) -> None:
    module = network()
    path = tmp_path / "weights.pt"
    torch.save(module.state_dict(), path)
    model = TorchRuntime().load(path, spec("weights.pt", architecture=MLP))
    np.testing.assert_allclose(model.predict(X[:10]).values, expected(module, X[:10]), rtol=1e-6)
    assert (model.signature.task, model.signature.n_features) == ("other", 4)


def test_state_dict_that_does_not_fit_the_architecture_is_invalid(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save(network(outputs=2).state_dict(), path)
    with pytest.raises(InvalidArtifact, match="does not fit"):
        TorchRuntime().load(path, spec("weights.pt", architecture=MLP))


def test_a_pickled_module_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save(network(), path)
    with pytest.raises(UntrustedArtifact):
        TorchRuntime().load(path, spec(architecture=MLP))
    with pytest.raises(InvalidArtifact, match="architecture"):
        TorchRuntime().load(path, spec())


def test_an_exported_program_with_a_pickled_payload_is_refused(tmp_path: Path) -> None:
    path = export(tmp_path, network())
    tampered = tmp_path / "tampered.pt2"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(tampered, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename.endswith("weights_config.json"):
                data = data.replace(b'"use_pickle": false', b'"use_pickle": true')
            target.writestr(item, data)
    with pytest.raises(UntrustedArtifact, match="pickled"):
        TorchRuntime().load(tampered, spec("tampered.pt2"))


def test_gradient_x_input_matches_autograd(tmp_path: Path) -> None:
    module = network()
    model = TorchRuntime().load(export(tmp_path, module), spec("model.pt2", task="classification"))
    inputs = torch.from_numpy(X[:5]).requires_grad_(True)
    logits = module(inputs)
    logits.gather(1, logits.argmax(1, keepdim=True)).sum().backward()
    attributions = model.explain(X[:5])
    assert attributions is not None and attributions.method == "gradient-x-input"
    np.testing.assert_allclose(attributions.values, (inputs.grad * inputs).detach().numpy(), rtol=1e-5)  # type: ignore[operator]


def test_garbage_is_an_invalid_artifact(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    path.write_bytes(b"definitely not a model")
    with pytest.raises(InvalidArtifact):
        TorchRuntime().load(path, spec())


@pytest.mark.filterwarnings(TORCHSCRIPT_DEPRECATED)
def test_inspector_reports_the_signature_from_a_separate_process(tmp_path: Path) -> None:
    signature = SubprocessArtifactInspector(timeout_s=120).inspect(
        script(tmp_path, network()), spec(inputShape=[4], classes=[0, 1, 2])
    )
    assert (signature.task, signature.n_features, signature.classes) == ("classification", 4, (0, 1, 2))
