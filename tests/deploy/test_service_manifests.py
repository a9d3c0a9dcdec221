"""deploy/kubernetes: the base and each overlay render with `kubectl kustomize`, and every rendered
document is valid for each supported Kubernetes version in kubernetes-validate's strict mode (a field the
API does not know fails), which a misspelled field shows it can; then the shape: probes on the service's
health routes, a user without privileges, settings from a ConfigMap, DATABASE_URL from a Secret, an
autoscaler and a disruption budget aimed at the Deployment, and the production overlay's values."""

from __future__ import annotations

import copy
import re
from functools import cache
from typing import Any

import kubernetes_validate
import pytest
import yaml

from aiservice.interfaces.http.routers.health import router as health_router
from aiservice.settings import Settings
from tests.deploy.tools import DOCKERFILE, KUSTOMIZE, run, tool

# The Kubernetes minor versions these manifests are written for (README: deploy/README.md).
KUBERNETES_VERSIONS = ("1.29", "1.30", "1.31", "1.32", "1.33", "1.34", "1.35")
TARGETS = ("base", "overlays/production")
KINDS = {
    "ServiceAccount",
    "ConfigMap",
    "Service",
    "PersistentVolumeClaim",
    "Deployment",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
}

Document = dict[str, Any]


@cache
def rendered(target: str) -> tuple[Document, ...]:
    kubectl = tool("kubectl", "the kubectl client: kubectl kustomize renders the manifests")
    code, output = run([kubectl, "kustomize", str(KUSTOMIZE / target)])
    assert code == 0, output
    return tuple(doc for doc in yaml.safe_load_all(output) if doc)


def one(target: str, kind: str) -> Document:
    (found,) = [doc for doc in rendered(target) if doc["kind"] == kind]
    return copy.deepcopy(found)


def container(target: str) -> Document:
    (only,) = one(target, "Deployment")["spec"]["template"]["spec"]["containers"]
    found: Document = only
    return found


def test_kubernetes_validate_bundles_every_supported_version() -> None:
    bundled = {".".join(v.split(".")[:2]) for v in kubernetes_validate.utils.all_versions()}
    assert set(KUBERNETES_VERSIONS) <= bundled, sorted(bundled)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("target", TARGETS)
def test_every_rendered_document_is_valid_in_strict_mode(target: str, version: str) -> None:
    documents = rendered(target)
    assert {doc["kind"] for doc in documents} == KINDS
    for doc in documents:
        kubernetes_validate.validate(doc, version, strict=True)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_a_misspelled_field_is_refused(version: str) -> None:
    deployment = one("base", "Deployment")
    probe_holder = deployment["spec"]["template"]["spec"]["containers"][0]
    probe_holder["readinessProbes"] = probe_holder.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError, match="readinessProbes"):
        kubernetes_validate.validate(deployment, version, strict=True)


def test_a_wrongly_typed_value_is_refused() -> None:
    autoscaler = one("base", "HorizontalPodAutoscaler")
    autoscaler["spec"]["minReplicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(autoscaler, KUBERNETES_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("target", TARGETS)
def test_probes_use_the_service_health_routes(target: str) -> None:
    routes = {getattr(route, "path", None) for route in health_router.routes}
    main = container(target)
    port = main["ports"][0]
    assert port == {"name": "http", "containerPort": Settings.model_fields["port"].default, "protocol": "TCP"}
    probes = {name: main[name]["httpGet"] for name in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert probes["livenessProbe"]["path"] == "/health"  # no I/O: a database outage restarts nothing
    assert probes["readinessProbe"]["path"] == "/health/ready"
    for probe in probes.values():
        assert probe["path"] in routes and probe["port"] == "http"


@pytest.mark.parametrize("target", TARGETS)
def test_runs_as_the_image_user_without_privileges(target: str) -> None:
    uid = re.search(r"^USER (\d+):(\d+)$", DOCKERFILE.read_text(), flags=re.M)
    assert uid is not None
    pod = one(target, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == int(uid.group(1))
    assert pod["securityContext"]["runAsGroup"] == int(uid.group(2))
    assert pod["automountServiceAccountToken"] is False
    security = container(target)["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["readOnlyRootFilesystem"] is True
    assert security["capabilities"] == {"drop": ["ALL"]}
    resources = container(target)["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"]) and "memory" in resources["limits"]


@pytest.mark.parametrize("target", TARGETS)
def test_settings_come_from_the_configmap_and_database_url_from_a_secret(target: str) -> None:
    config = one(target, "ConfigMap")
    main = container(target)
    assert main["envFrom"] == [{"configMapRef": {"name": config["metadata"]["name"]}}]
    fields = set(Settings.model_fields)
    names = set(config["data"]) | {env["name"] for env in main["env"]}
    assert {name.lower() for name in names} <= fields, {n for n in names if n.lower() not in fields}
    secrets = {env["name"]: env["valueFrom"]["secretKeyRef"] for env in main["env"]}
    assert secrets["DATABASE_URL"] == {"name": "aiservice-secrets", "key": "DATABASE_URL"}
    assert secrets["JWT_SECRET"]["name"] == "aiservice-secrets"
    assert config["data"]["ENVIRONMENT"] == "production"
    # The values are valid settings.
    Settings(_env_file=None, **{name.lower(): value for name, value in config["data"].items()})


@pytest.mark.parametrize("target", TARGETS)
def test_service_autoscaler_and_budget_aim_at_the_deployment(target: str) -> None:
    deployment = one(target, "Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()
    assert "replicas" not in deployment["spec"]  # the autoscaler owns the count
    service = one(target, "Service")
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "http"
    autoscaler = one(target, "HorizontalPodAutoscaler")
    assert autoscaler["apiVersion"] == "autoscaling/v2"
    assert autoscaler["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }
    assert 2 <= autoscaler["spec"]["minReplicas"] < autoscaler["spec"]["maxReplicas"]
    budget = one(target, "PodDisruptionBudget")
    assert budget["spec"]["selector"]["matchLabels"] == selector
    assert budget["spec"]["maxUnavailable"] < autoscaler["spec"]["minReplicas"]


def test_production_overlay_sets_replicas_image_and_backends() -> None:
    main = container("overlays/production")
    image, _, tag = main["image"].rpartition(":")
    assert image and tag and tag != "latest"
    assert {doc["metadata"].get("namespace") for doc in rendered("overlays/production")} == {"aiservice"}
    autoscaler = one("overlays/production", "HorizontalPodAutoscaler")["spec"]
    assert (autoscaler["minReplicas"], autoscaler["maxReplicas"]) == (3, 12)
    data = one("overlays/production", "ConfigMap")["data"]
    assert data["EVENT_BUS"] == "nats" and data["NATS_URL"].startswith("nats://")
    assert data["REDIS_HOST"] and data["REDIS_PORT"] == "6379"
    assert data["WORKERS"] == one("base", "ConfigMap")["data"]["WORKERS"]  # merged, not replaced
