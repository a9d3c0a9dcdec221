"""The Kubernetes settings: their defaults, and the environment variables that set them."""

from __future__ import annotations

from pathlib import Path

import pytest

from aiservice.settings import Settings


def test_defaults_name_the_aiservice_namespace_secret_and_image(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("K8S_NAMESPACE", "K8S_IMAGE", "K8S_SECRET_NAME"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings(_env_file=None)
    assert (settings.k8s_namespace, settings.k8s_secret_name) == ("aiservice", "aiservice")
    assert settings.k8s_image == "ghcr.io/aiservice/aiservice:0.1.0"


def test_the_environment_sets_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("K8S_NAMESPACE", "models")
    monkeypatch.setenv("K8S_IMAGE", "registry.example/aiservice:2")
    monkeypatch.setenv("K8S_SECRET_NAME", "model-env")
    monkeypatch.setenv("KUBECONFIG", "/etc/aiservice/kubeconfig")
    settings = Settings(_env_file=None)
    assert (settings.k8s_namespace, settings.k8s_image) == ("models", "registry.example/aiservice:2")
    assert (settings.k8s_secret_name, settings.kubeconfig) == ("model-env", Path("/etc/aiservice/kubeconfig"))


def test_a_namespace_that_is_no_dns_label_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("K8S_NAMESPACE", "Models_EU")
    with pytest.raises(ValueError, match="k8s_namespace"):
        Settings(_env_file=None)
