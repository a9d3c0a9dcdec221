"""The rendered manifests: strictly valid for every supported Kubernetes version, and what they say."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from kubernetes_validate import utils as kubernetes_validate

from aiservice.domain.deployments import Autoscaling, Scaling, ScalingMetric
from aiservice.infrastructure.deploy.k8s_render import (
    REVISION_LABEL,
    SUPPORTED_KUBERNETES,
    K8sOptions,
    render,
)
from tests.deploy_k8s.helpers import SPEC, autoscaled, by_kind, spec

OPTIONS = K8sOptions(namespace="models", image="registry.example/aiservice:1.2.3", secret_name="model-env")

CASES: dict[str, tuple[Any, Scaling | None]] = {
    "default (fixed replicas)": (SPEC, None),
    "autoscaling by CPU": (SPEC, autoscaled(ScalingMetric.CPU, 70)),
    "autoscaling by CPU without a CPU limit": (spec(cpu_millicores=None), autoscaled(ScalingMetric.CPU, 70)),
    "autoscaling by concurrency": (SPEC, autoscaled(ScalingMetric.CONCURRENCY, 2.5)),
    "autoscaling by latency": (SPEC, autoscaled(ScalingMetric.LATENCY, 250)),
    "autoscaling off": (SPEC, Scaling(2, 4, Autoscaling(enabled=False))),
    "dev with min 0": (spec(replicas=0), autoscaled(ScalingMetric.CPU, 70, low=0, high=3)),
    "no resource limits": (spec(cpu_millicores=None, memory_bytes=None), None),
}


def _validate(manifest: dict[str, Any], version: str) -> str:
    return str(kubernetes_validate.validate(manifest, version, strict=True))


def test_every_supported_version_has_bundled_schemas() -> None:
    bundled = {kubernetes_validate.major_minor(v) for v in kubernetes_validate.all_versions()}
    assert set(SUPPORTED_KUBERNETES) <= bundled


@pytest.mark.parametrize("version", SUPPORTED_KUBERNETES)
@pytest.mark.parametrize("case", CASES)
def test_every_manifest_is_strictly_valid(case: str, version: str) -> None:
    replica_spec, scaling = CASES[case]
    for manifest in render(replica_spec, OPTIONS, scaling):
        assert _validate(manifest, version) == version, f"{manifest['kind']} checked against another schema"


@pytest.mark.parametrize("version", SUPPORTED_KUBERNETES)
def test_strict_validation_rejects_an_unknown_field(version: str) -> None:
    deployment = copy.deepcopy(by_kind(render(SPEC, OPTIONS))["Deployment"])
    deployment["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"tcpSocket": {"port": 8080}}
    kubernetes_validate.validate(deployment, version, strict=False)  # only strict mode sees the typo
    with pytest.raises(kubernetes_validate.ValidationError, match="readinesProbe"):
        _validate(deployment, version)


def test_a_fixed_deployment_has_a_service_deployment_and_budget_but_no_autoscaler() -> None:
    manifests = by_kind(render(SPEC, OPTIONS))
    assert sorted(manifests) == ["Deployment", "PodDisruptionBudget", "Service"]
    assert manifests["Deployment"]["spec"]["replicas"] == 2


def test_every_object_goes_to_the_configured_namespace() -> None:
    manifests = render(SPEC, OPTIONS, autoscaled(ScalingMetric.CPU, 70))
    assert {m["metadata"]["namespace"] for m in manifests} == {"models"}


def test_the_pod_runs_the_image_as_a_model_server_for_the_revision() -> None:
    container = _container(render(spec(revision=7), OPTIONS))
    assert container["image"] == "registry.example/aiservice:1.2.3"
    assert container["command"] == [
        "aiservice", "serve-model", "--deployment", "fraud", "--tenant", "acme",
        "--revision", "7", "--host", "0.0.0.0", "--port", "8080",
    ]  # fmt: skip


def test_the_pod_takes_its_environment_from_the_secret() -> None:
    assert _container(render(SPEC, OPTIONS))["envFrom"] == [{"secretRef": {"name": "model-env"}}]


def test_requests_equal_limits() -> None:
    resources = _container(render(SPEC, OPTIONS))["resources"]
    assert resources["requests"] == resources["limits"] == {"cpu": "500m", "memory": str(512 * 1024**2)}


def test_probes_use_the_health_paths() -> None:
    container = _container(render(SPEC, OPTIONS))
    assert container["readinessProbe"]["httpGet"] == {"path": "/health/ready", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert container["startupProbe"]["httpGet"] == {"path": "/health", "port": "http"}


def test_the_pod_runs_as_non_root_without_privileges() -> None:
    pod = by_kind(render(SPEC, OPTIONS))["Deployment"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def test_the_revision_label_is_on_the_pod_template_and_not_in_the_selector() -> None:
    deployment = by_kind(render(spec(revision=4), OPTIONS))["Deployment"]
    assert deployment["spec"]["template"]["metadata"]["labels"][REVISION_LABEL] == "4"
    assert REVISION_LABEL not in deployment["spec"]["selector"]["matchLabels"]


def test_labels_name_the_app_tenant_model_version_and_manager() -> None:
    labels = by_kind(render(SPEC, OPTIONS))["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert labels["app.kubernetes.io/name"] == "aiservice-model"
    assert labels["app.kubernetes.io/managed-by"] == "aiservice"
    assert labels["app.kubernetes.io/instance"].startswith("acme-fraud-")
    assert (labels["aiservice.io/tenant"], labels["aiservice.io/model"]) == ("acme", SPEC.model_id)
    assert (labels["aiservice.io/version"], labels["aiservice.io/revision"]) == ("3", "1")


def test_service_budget_and_deployment_select_the_same_pods() -> None:
    manifests = by_kind(render(SPEC, OPTIONS))
    selector = manifests["Deployment"]["spec"]["selector"]["matchLabels"]
    assert manifests["Service"]["spec"]["selector"] == selector
    assert manifests["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == selector


def test_two_tenants_deployments_of_one_name_select_different_pods() -> None:
    ours = by_kind(render(SPEC, OPTIONS))["Service"]["spec"]["selector"]
    theirs = by_kind(render(spec(tenant_id="globex"), OPTIONS))["Service"]["spec"]["selector"]
    assert ours != theirs


def test_the_service_maps_port_80_to_the_pods_8080() -> None:
    service = by_kind(render(SPEC, OPTIONS))["Service"]
    assert service["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"}]
    assert _container(render(SPEC, OPTIONS))["ports"][0]["containerPort"] == 8080


def test_cpu_autoscaling_targets_utilisation_and_leaves_replicas_to_the_autoscaler() -> None:
    manifests = by_kind(render(SPEC, OPTIONS, autoscaled(ScalingMetric.CPU, 70)))
    hpa = manifests["HorizontalPodAutoscaler"]["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 6)
    assert hpa["metrics"] == [
        {
            "type": "Resource",
            "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}},
        }
    ]
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 45
    assert "replicas" not in manifests["Deployment"]["spec"]


def test_cpu_autoscaling_without_a_limit_targets_a_share_of_one_core() -> None:
    hpa = by_kind(render(spec(cpu_millicores=None), OPTIONS, autoscaled(ScalingMetric.CPU, 70)))
    target = hpa["HorizontalPodAutoscaler"]["spec"]["metrics"][0]["resource"]["target"]
    assert target == {"type": "AverageValue", "averageValue": "700m"}


@pytest.mark.parametrize(
    ("metric", "target", "name", "value"),
    [
        (ScalingMetric.CONCURRENCY, 4, "aiservice_inflight_requests", "4"),
        (ScalingMetric.CONCURRENCY, 2.5, "aiservice_inflight_requests", "2500m"),
        (ScalingMetric.LATENCY, 250, "aiservice_request_latency_p95_ms", "250"),
    ],
)
def test_concurrency_and_latency_are_custom_pods_metrics(
    metric: ScalingMetric, target: float, name: str, value: str
) -> None:
    hpa = by_kind(render(SPEC, OPTIONS, autoscaled(metric, target)))["HorizontalPodAutoscaler"]
    assert hpa["spec"]["metrics"] == [
        {
            "type": "Pods",
            "pods": {"metric": {"name": name}, "target": {"type": "AverageValue", "averageValue": value}},
        }
    ]


def test_autoscaling_off_renders_no_autoscaler_and_the_specs_replicas() -> None:
    manifests = by_kind(render(spec(replicas=3), OPTIONS, Scaling(3, 5, Autoscaling(enabled=False))))
    assert "HorizontalPodAutoscaler" not in manifests
    assert manifests["Deployment"]["spec"]["replicas"] == 3


def test_dev_with_min_zero_renders_no_autoscaler_and_zero_replicas() -> None:
    manifests = by_kind(render(spec(replicas=0), OPTIONS, autoscaled(ScalingMetric.CPU, 70, low=0, high=3)))
    assert "HorizontalPodAutoscaler" not in manifests
    assert manifests["Deployment"]["spec"]["replicas"] == 0


@pytest.mark.parametrize(("replicas", "budget"), [(1, {"maxUnavailable": 1}), (2, {"minAvailable": 1})])
def test_the_budget_keeps_one_pod_only_when_there_are_two(replicas: int, budget: dict[str, int]) -> None:
    pdb = by_kind(render(spec(replicas=replicas), OPTIONS))["PodDisruptionBudget"]["spec"]
    assert {k: v for k, v in pdb.items() if k != "selector"} == budget


def test_with_an_autoscaler_the_budget_follows_its_minimum() -> None:
    manifests = by_kind(render(spec(replicas=1), OPTIONS, autoscaled(ScalingMetric.CPU, 70, low=3, high=6)))
    assert manifests["PodDisruptionBudget"]["spec"]["minAvailable"] == 1


def _container(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    container: dict[str, Any] = by_kind(manifests)["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    return container
