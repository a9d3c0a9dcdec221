"""Keras runtime: .keras files and zipped SavedModels predict like Keras; unsafe zips are refused."""

from __future__ import annotations

import stat
import warnings
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn.datasets import load_iris

from aiservice.application.ports import LoadSpec
from aiservice.domain.errors import InvalidArtifact, UntrustedArtifact
from aiservice.domain.models import Framework
from aiservice.infrastructure.runtimes.archives import ArchiveLimits
from aiservice.infrastructure.runtimes.inspector import SubprocessArtifactInspector
from aiservice.infrastructure.runtimes.keras import KerasRuntime
from aiservice.infrastructure.runtimes.registry import FrameworkRegistry

X, _ = load_iris(return_X_y=True)
X = X.astype(np.float32)


@contextmanager
def saving() -> Iterator[None]:
    """Keras's savers hand TensorFlow tensors to numpy 2, which warns; only the saving, not the runtime."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", "__array__ implementation doesn't accept a copy keyword", DeprecationWarning
        )
        yield


def network(outputs: int = 3, activation: str | None = "softmax") -> keras.Model:
    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(outputs, activation)]
    )


def save_keras(tmp_path: Path, model: keras.Model, name: str = "model.keras") -> Path:
    with saving():
        model.save(tmp_path / "model.keras")
    if name != "model.keras":
        (tmp_path / "model.keras").rename(tmp_path / name)
    return tmp_path / name


def save_zipped(tmp_path: Path, model: keras.Model) -> Path:
    with saving():
        model.export(tmp_path / "exported", verbose=False)
    path = tmp_path / "model.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for file in sorted((tmp_path / "exported").rglob("*")):
            archive.write(file, Path("exported") / file.relative_to(tmp_path / "exported"))
    return path


def expected(model: keras.Model, batch: np.ndarray) -> np.ndarray:
    result: np.ndarray = model(batch, training=False).numpy()
    return result


def spec(filename: str = "model.keras", **configuration: Any) -> LoadSpec:
    framework = Framework("tensorflow") if filename.endswith(".zip") else Framework("keras")
    return LoadSpec(framework, filename, configuration=configuration)


def test_keras_classifier_keeps_softmax_probabilities(tmp_path: Path) -> None:
    network_ = network()
    model = KerasRuntime().load(save_keras(tmp_path, network_), spec(task="classification"))
    prediction = model.predict(X[:10])
    probabilities = expected(network_, X[:10])
    np.testing.assert_allclose(prediction.probabilities, probabilities, rtol=1e-6)  # type: ignore[arg-type]
    np.testing.assert_array_equal(prediction.values, probabilities.argmax(axis=1))
    assert (model.signature.task, model.signature.classes, model.signature.n_features) == (
        "classification",
        (0, 1, 2),
        4,
    )


def test_keras_file_stored_without_its_extension_loads(tmp_path: Path) -> None:
    network_ = network(outputs=1, activation=None)
    model = KerasRuntime().load(save_keras(tmp_path, network_, name="blob"), spec(numThreads=1))
    prediction = model.predict(X[:10])
    np.testing.assert_allclose(prediction.values, expected(network_, X[:10]).ravel(), rtol=1e-6)
    assert model.signature.task == "regression"
    assert [p.name for p in tmp_path.iterdir()] == ["blob"]  # the .keras link is gone


def test_saved_model_zip_serves_its_signature_with_softmax_over_logits(tmp_path: Path) -> None:
    network_ = network(activation=None)
    model = KerasRuntime().load(save_zipped(tmp_path, network_), spec("model.zip", classes=["a", "b", "c"]))
    prediction = model.predict(X[:10])
    probabilities = tf.nn.softmax(expected(network_, X[:10])).numpy()
    np.testing.assert_allclose(prediction.probabilities, probabilities, rtol=1e-5)  # type: ignore[arg-type]
    np.testing.assert_array_equal(prediction.values, np.array(["a", "b", "c"])[probabilities.argmax(1)])
    assert (model.signature.n_features, model.signature.classes) == (4, ("a", "b", "c"))


def test_gradient_x_input_matches_a_gradient_tape(tmp_path: Path) -> None:
    network_ = network(outputs=1, activation=None)
    model = KerasRuntime().load(save_zipped(tmp_path, network_), spec("model.zip"))
    inputs = tf.constant(X[:5])
    with tf.GradientTape() as tape:
        tape.watch(inputs)
        total = tf.reduce_sum(network_(inputs, training=False))
    attributions = model.explain(X[:5])
    assert attributions is not None and attributions.method == "gradient-x-input"
    np.testing.assert_allclose(
        attributions.values, (tape.gradient(total, inputs) * inputs).numpy(), rtol=1e-5
    )


def zip_with(tmp_path: Path, *members: zipfile.ZipInfo) -> Path:
    path = tmp_path / "model.zip"
    with zipfile.ZipFile(path, "w") as archive:
        for member in members:
            archive.writestr(member, b"x")
    return path


def test_zip_member_escaping_the_folder_is_refused(tmp_path: Path) -> None:
    path = zip_with(tmp_path, zipfile.ZipInfo("saved_model.pb"), zipfile.ZipInfo("../evil"))
    with pytest.raises(InvalidArtifact, match="outside"):
        KerasRuntime().load(path, spec("model.zip"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.zip"]


def test_zip_with_a_symbolic_link_is_refused(tmp_path: Path) -> None:
    link = zipfile.ZipInfo("variables")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    with pytest.raises(InvalidArtifact, match="link"):
        KerasRuntime().load(zip_with(tmp_path, link), spec("model.zip"))


def test_zip_with_more_members_than_the_operator_allows_is_refused(tmp_path: Path) -> None:
    runtime = FrameworkRegistry.discover(ArchiveLimits(max_members=2)).get(Framework("tensorflow"))
    path = zip_with(tmp_path, *(zipfile.ZipInfo(f"m{i}") for i in range(3)))
    with pytest.raises(InvalidArtifact, match="3 members; at most 2"):
        runtime.load(path, spec("model.zip"))


def test_a_lambda_layer_is_refused(tmp_path: Path) -> None:
    lambda_model = keras.Sequential([keras.Input((4,)), keras.layers.Lambda(lambda x: x * 2)])
    with pytest.raises(UntrustedArtifact, match="Lambda"):
        KerasRuntime().load(save_keras(tmp_path, lambda_model), spec())


def test_garbage_is_an_invalid_artifact(tmp_path: Path) -> None:
    for name in ("model.keras", "model.zip"):
        path = tmp_path / name
        path.write_bytes(b"definitely not a model")
        with pytest.raises(InvalidArtifact):
            KerasRuntime().load(path, spec(name))


def test_inspector_reports_the_signature_from_a_separate_process(tmp_path: Path) -> None:
    signature = SubprocessArtifactInspector(timeout_s=120).inspect(
        save_keras(tmp_path, network()), spec(task="classification")
    )
    assert (signature.task, signature.n_features, signature.classes) == ("classification", 4, (0, 1, 2))


def _gpus() -> list[Any]:
    return list(tf.config.list_logical_devices("GPU"))


@pytest.mark.parametrize("saved", ["keras", "savedmodel"])
def test_a_gpu_asked_for_where_there_is_none_serves_on_the_cpu_and_says_why(
    tmp_path: Path, saved: str
) -> None:
    if _gpus():
        pytest.skip("this machine has a GPU: the GPU test below covers it")
    network_ = network()
    path = save_keras(tmp_path, network_) if saved == "keras" else save_zipped(tmp_path, network_)
    model = KerasRuntime().load(path, LoadSpec(spec(path.name).framework, path.name, device="gpu"))
    assert model.signature.extra["device"] == "/CPU:0"
    assert "sees none" in model.signature.extra["deviceReason"]
    np.testing.assert_allclose(model.predict(X[:5]).values, expected(network_, X[:5]), rtol=1e-6)


def test_a_cpu_load_keeps_the_weights_on_the_cpu(tmp_path: Path) -> None:
    model = KerasRuntime().load(save_keras(tmp_path, network()), LoadSpec(Framework("keras"), "model.keras"))
    assert model.signature.extra["device"] == "/CPU:0" and "deviceReason" not in model.signature.extra
    assert all("CPU" in weight.value.device for weight in model._keep.weights)


@pytest.mark.gpu
@pytest.mark.skipif(not _gpus(), reason="no GPU visible to TensorFlow on this machine")
def test_a_gpu_asked_for_holds_the_weights_on_the_gpu(tmp_path: Path) -> None:
    model = KerasRuntime().load(
        save_keras(tmp_path, network()), LoadSpec(Framework("keras"), "model.keras", device="gpu")
    )
    assert "GPU" in model.signature.extra["device"] and "deviceReason" not in model.signature.extra
    assert all("GPU" in weight.value.device for weight in model._keep.weights)
    assert model.predict(X[:5]).values.shape == (5, 3)
