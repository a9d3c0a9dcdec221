"""The Kubernetes deployer, with the official client, against kmock's API emulator on a loopback port.

No cluster runs here: the emulator stores what is applied and answers reads, lists and deletes; it
does not default, validate or reconcile objects (no pods, no status of its own), so a status is set
by the test as a controller would, through the status subresource.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import kmock
import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from aiservice.application.deploying.ports import ReplicaSpec, RevisionState
from aiservice.domain.deployments import (
    Deployment,
    DeploymentTarget,
    Environment,
    ResourceLimits,
    Scaling,
    ScalingMetric,
)
from aiservice.domain.errors import Unavailable
from aiservice.infrastructure.deploy.k8s_names import object_name
from aiservice.infrastructure.deploy.k8s_render import K8sOptions
from aiservice.infrastructure.deploy.kubernetes import KubernetesDeployer
from aiservice.settings import Settings
from tests.deploy_k8s.conftest import Emulator
from tests.deploy_k8s.helpers import SPEC, autoscaled, spec

NAMESPACE = "models"
NAME = object_name(SPEC.tenant_id, SPEC.deployment)
ENDPOINT = f"http://{NAME}.{NAMESPACE}.svc.cluster.local"


@dataclass
class FakeDirectory:
    """The live deployments, as the database would list them."""

    deployments: list[Deployment] = field(default_factory=list)

    def live(self, target: DeploymentTarget | None = None) -> list[Deployment]:
        return [d for d in self.deployments if target is None or d.target == target]

    def find(self, tenant_id: str, name: str) -> Deployment | None:
        return next((d for d in self.deployments if (d.tenant_id, d.name) == (tenant_id, name)), None)


def _live(replica_spec: ReplicaSpec, scaling: Scaling) -> Deployment:
    now = datetime.now(UTC)
    deployment = Deployment.create(
        tenant_id=replica_spec.tenant_id,
        name=replica_spec.deployment,
        model_id=replica_spec.model_id,
        environment=Environment.PRODUCTION,
        target=DeploymentTarget.KUBERNETES,
        scaling=scaling,
        resources=ResourceLimits(cpu="500m", memory="512Mi"),
        version=replica_spec.version,
        reference=str(replica_spec.version),
        now=now,
    )
    return replace(deployment, id=replica_spec.deployment_id)


def _serving_one_rolling_two() -> Deployment:
    deployment = _live(SPEC, autoscaled(ScalingMetric.CPU, 70))
    now = datetime.now(UTC)
    deployment.rolled_out(1, 2, now)
    deployment.roll_to(4, "4", now)
    return deployment


def _template_revision(emulator: Emulator) -> str:
    labels = _read_all(emulator)["Deployment"].spec.template.metadata.labels
    return str(labels["aiservice.io/revision"])


@pytest.fixture
def directory() -> FakeDirectory:
    return FakeDirectory([_live(SPEC, autoscaled(ScalingMetric.CPU, 70))])


@pytest.fixture
def deployer(emulator: Emulator, directory: FakeDirectory) -> KubernetesDeployer:
    return KubernetesDeployer(emulator.api, K8sOptions(namespace=NAMESPACE), directory, request_timeout_s=10)


def _set_status(emulator: Emulator, status: dict[str, Any]) -> None:
    client.AppsV1Api(emulator.api).patch_namespaced_deployment_status(NAME, NAMESPACE, {"status": status})


def _read_all(emulator: Emulator) -> dict[str, Any]:
    """Every object of the deployment, read back through the typed client (None where it is gone)."""
    reads = {
        "Deployment": client.AppsV1Api(emulator.api).read_namespaced_deployment,
        "Service": client.CoreV1Api(emulator.api).read_namespaced_service,
        "HorizontalPodAutoscaler": client.AutoscalingV2Api(
            emulator.api
        ).read_namespaced_horizontal_pod_autoscaler,
        "PodDisruptionBudget": client.PolicyV1Api(emulator.api).read_namespaced_pod_disruption_budget,
    }
    found: dict[str, Any] = {}
    for kind, read in reads.items():
        try:
            found[kind] = read(NAME, NAMESPACE)
        except ApiException as error:
            assert error.status == 404
            found[kind] = None
    return found


def test_ensure_creates_the_four_objects(emulator: Emulator, deployer: KubernetesDeployer) -> None:
    deployer.ensure(SPEC)
    objects = _read_all(emulator)
    deployment, service = objects["Deployment"], objects["Service"]
    assert deployment.spec.template.spec.containers[0].command[:2] == ["aiservice", "serve-model"]
    assert deployment.spec.template.metadata.labels["aiservice.io/revision"] == "1"
    assert deployment.metadata.annotations["aiservice.io/deployment-id"] == SPEC.deployment_id
    assert service.spec.ports[0].port == 80
    assert objects["HorizontalPodAutoscaler"].spec.min_replicas == 2
    assert objects["PodDisruptionBudget"].spec.min_available == 1


def test_ensure_applies_server_side_as_the_aiservice_field_manager(
    emulator: Emulator, deployer: KubernetesDeployer
) -> None:
    deployer.ensure(SPEC)
    patches = emulator.requests("PATCH")
    assert len(patches) == 4
    for request in patches:
        assert request.headers["Content-Type"] == "application/apply-patch+yaml"
        assert (request.params["fieldManager"], request.params["force"]) == ("aiservice", "true")


def test_a_new_revision_patches_the_pod_template(emulator: Emulator, deployer: KubernetesDeployer) -> None:
    deployer.ensure(SPEC)
    deployer.ensure(spec(revision=2, version=4))
    deployment = _read_all(emulator)["Deployment"]
    assert deployment.spec.template.metadata.labels["aiservice.io/revision"] == "2"
    assert deployment.spec.template.spec.containers[0].command[7] == "2"  # --revision 2
    last = [r for r in emulator.requests("PATCH") if r.url.path.endswith(f"/deployments/{NAME}")][-1]
    assert last.params["fieldManager"] == "aiservice"


def test_ensure_again_with_the_same_spec_only_reads(emulator: Emulator, deployer: KubernetesDeployer) -> None:
    deployer.ensure(SPEC)
    before = len(emulator.requests("PATCH"))
    state = deployer.ensure(SPEC)
    assert len(emulator.requests("PATCH")) == before
    assert state.revision == 1


def test_ensure_without_a_status_reports_nothing_ready(deployer: KubernetesDeployer) -> None:
    state = deployer.ensure(SPEC)
    assert (state.revision, state.ready, state.endpoint, state.failed) == (1, 0, None, None)


def test_observe_maps_ready_replicas(emulator: Emulator, deployer: KubernetesDeployer) -> None:
    deployer.ensure(SPEC)
    _set_status(emulator, {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2})
    assert deployer.observe(SPEC.deployment_id, 1) == RevisionState(
        revision=1, desired=2, ready=2, endpoint=ENDPOINT
    )


def test_observe_maps_progress_deadline_exceeded_to_failed(
    emulator: Emulator, deployer: KubernetesDeployer
) -> None:
    deployer.ensure(SPEC)
    condition = {
        "type": "Progressing",
        "status": "False",
        "reason": "ProgressDeadlineExceeded",
        "message": "ReplicaSet has timed out progressing.",
    }
    _set_status(emulator, {"replicas": 1, "updatedReplicas": 1, "conditions": [condition]})
    state = deployer.observe(SPEC.deployment_id, 1)
    assert state is not None and state.failed == "ReplicaSet has timed out progressing."


def test_observe_of_another_revision_or_deployment_is_none(deployer: KubernetesDeployer) -> None:
    deployer.ensure(SPEC)
    assert deployer.observe(SPEC.deployment_id, 2) is None
    assert deployer.observe("not-a-deployment", 1) is None


def test_a_restarted_deployer_finds_the_deployment_by_its_label(emulator: Emulator) -> None:
    KubernetesDeployer(emulator.api, K8sOptions(namespace=NAMESPACE)).ensure(SPEC)
    fresh = KubernetesDeployer(emulator.api, K8sOptions(namespace=NAMESPACE))
    state = fresh.observe(SPEC.deployment_id, 1)
    assert state is not None and state.desired == 2


def test_revisions_maps_each_deployment_id_to_its_revision(deployer: KubernetesDeployer) -> None:
    deployer.ensure(spec(revision=3))
    deployer.ensure(spec(tenant_id="globex", deployment_id="9d0c0ffe-0000-4000-8000-000000000001"))
    assert deployer.revisions() == {SPEC.deployment_id: [3], "9d0c0ffe-0000-4000-8000-000000000001": [1]}


def test_remove_deletes_every_object(emulator: Emulator, deployer: KubernetesDeployer) -> None:
    deployer.ensure(SPEC)
    deployer.remove(SPEC.deployment_id)
    assert set(_read_all(emulator).values()) == {None}
    assert deployer.revisions() == {}


def test_turning_autoscaling_off_deletes_the_autoscaler(
    emulator: Emulator, deployer: KubernetesDeployer, directory: FakeDirectory
) -> None:
    deployer.ensure(SPEC)
    directory.deployments = [_live(SPEC, Scaling(2, 2))]
    deployer.ensure(spec(revision=2))
    objects = _read_all(emulator)
    assert objects["HorizontalPodAutoscaler"] is None
    assert objects["Deployment"].spec.replicas == 2


def test_retiring_an_older_revision_leaves_the_objects(
    emulator: Emulator, deployer: KubernetesDeployer
) -> None:
    deployer.ensure(SPEC)
    deployer.ensure(spec(revision=2))
    deployer.retire(SPEC.deployment_id, 1, drain_s=0)
    assert emulator.requests("DELETE") == []


def test_while_a_revision_rolls_out_ensuring_the_serving_one_applies_nothing(
    emulator: Emulator, deployer: KubernetesDeployer
) -> None:
    deployer.ensure(SPEC)
    deployer.ensure(spec(revision=2, version=4))
    before = len(emulator.requests("PATCH"))
    state = deployer.ensure(SPEC)
    assert len(emulator.requests("PATCH")) == before
    assert _template_revision(emulator) == "2" and state.revision == 1


def test_a_failed_revision_once_retired_rolls_back_to_the_serving_one(
    emulator: Emulator, deployer: KubernetesDeployer, directory: FakeDirectory
) -> None:
    directory.deployments = [_serving_one_rolling_two()]
    deployer.ensure(SPEC)
    deployer.ensure(spec(revision=2, version=4))
    deployer.retire(SPEC.deployment_id, 2, drain_s=0)
    assert emulator.requests("DELETE") == []
    deployer.ensure(SPEC)
    assert _template_revision(emulator) == "1"


def test_retiring_the_revision_of_a_live_deployment_with_nothing_serving_deletes_the_objects(
    emulator: Emulator, deployer: KubernetesDeployer
) -> None:
    deployer.ensure(SPEC)
    deployer.retire(SPEC.deployment_id, 1, drain_s=0)
    assert set(_read_all(emulator).values()) == {None}


def test_retiring_the_revision_of_a_deleted_deployment_deletes_the_objects(
    emulator: Emulator, deployer: KubernetesDeployer, directory: FakeDirectory
) -> None:
    deployer.ensure(SPEC)
    directory.deployments = []
    deployer.retire(SPEC.deployment_id, 1, drain_s=0)
    assert set(_read_all(emulator).values()) == {None}


def test_a_refusal_of_the_api_server_is_unavailable(emulator: Emulator, deployer: KubernetesDeployer) -> None:
    emulator.handler["patch"] << kmock.KubernetesError(
        status=403, reason="Forbidden", message="no apply for you"
    )
    with pytest.raises(Unavailable, match="403 no apply for you"):
        deployer.ensure(SPEC)


def test_from_settings_reaches_the_cluster_of_the_kubeconfig(emulator: Emulator, tmp_path: Path) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "kmock", "cluster": {"server": emulator.url}}],
                "users": [{"name": "ci", "user": {"token": "not-a-secret"}}],
                "contexts": [{"name": "kmock", "context": {"cluster": "kmock", "user": "ci"}}],
                "current-context": "kmock",
            }
        )
    )
    settings = Settings(_env_file=None, kubeconfig=kubeconfig, k8s_namespace=NAMESPACE)
    deployer = KubernetesDeployer.from_settings(settings)
    try:
        deployer.ensure(SPEC)
    finally:
        deployer.close()
    assert _template_revision(emulator) == "1"
    assert emulator.requests("PATCH")[0].headers["Authorization"] == "Bearer not-a-secret"
