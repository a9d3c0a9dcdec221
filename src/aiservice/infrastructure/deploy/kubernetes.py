"""The Kubernetes deployer: a deployment's revision as a Deployment, Service, PDB and HPA in one namespace.

Objects are written with server-side apply: a PATCH with content type ``application/apply-patch+yaml``
(JSON is YAML), ``fieldManager=aiservice`` and ``force=true``, through the official client's typed
``patch_namespaced_*`` methods. The API server then merges exactly the fields this manager owns, creates
what is missing, and takes over fields someone changed by hand (force); re-applying an unchanged
manifest changes nothing. Responses are read as raw JSON (``_preload_content=False``), the same wire
format the status mapping (``k8s_status``) and the tests use.

One Deployment serves every revision of a deployment, where the local deployer runs one set of
processes per revision. A new revision is a new pod template (its revision label changes), so
Kubernetes' rolling update starts the new pods, waits for their readiness and stops the old ones.
Hence:

- ``ensure`` of a revision older than the one the template runs (the reconciler keeps ensuring the
  serving revision while the next one rolls out) applies nothing: it reports the old pods. Applying
  it would roll the pods back and forth on every pass. Only once the newer revision was retired (its
  rollout failed) does ``ensure`` of the older one apply it, and Kubernetes rolls back to it.
- ``retire`` of an older revision has nothing to do: the rolling update retired its pods. Retiring
  the revision the template runs deletes the objects when the deployment is gone (or nothing else
  would serve), else marks it retired, as above.
- A rollback is the reconciler applying the older version as a new revision: nothing special.

``ensure`` runs on every reconcile pass: it reads the Deployment and re-applies only when the rendered
manifests changed, or every ``reapply_seconds`` (to put back what someone edited by hand), so a
steady deployment costs the API server one GET a pass.

The deployment's scaling (for the HPA) and whether it still lives come from a ``DeploymentDirectory``.
Without one, every deployment gets a fixed replica count and ``retire`` never deletes anything.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from aiservice.application.deploying.ports import DeploymentDirectory, ReplicaSpec, RevisionState
from aiservice.domain.deployments import Deployment, DeploymentTarget, Scaling
from aiservice.domain.errors import Unavailable
from aiservice.infrastructure.deploy.k8s_names import label_value, object_name
from aiservice.infrastructure.deploy.k8s_render import (
    DEPLOYMENT_ID_ANNOTATION,
    DEPLOYMENT_ID_LABEL,
    MANAGED_BY_LABEL,
    MANAGER,
    NAME_ANNOTATION,
    TENANT_ANNOTATION,
    K8sOptions,
    render,
)
from aiservice.infrastructure.deploy.k8s_status import revision_state, template_revision

if TYPE_CHECKING:
    from aiservice.settings import Settings

APPLY = "application/apply-patch+yaml"
# Deleted in this order: the autoscaler first, so it does not scale a Deployment that is going.
KINDS = ("HorizontalPodAutoscaler", "Deployment", "PodDisruptionBudget", "Service")


def api_client(kubeconfig: Path | None) -> client.ApiClient:
    """A client for the cluster of ``kubeconfig``, or of the pod this runs in when it is None."""
    configuration = client.Configuration()
    load: Callable[..., None] = config.load_incluster_config
    if kubeconfig is not None:
        load = functools.partial(config.load_kube_config, config_file=str(kubeconfig))
    load(client_configuration=configuration)
    return client.ApiClient(configuration)


@dataclass(frozen=True)
class _Kind:
    patch: Callable[..., Any]  # (name, namespace, body, **options)
    delete: Callable[..., Any]  # (name, namespace, **options)


class KubernetesDeployer:
    """Runs deployments in ``options.namespace``; ``directory`` supplies each one's scaling (HPA)."""

    target = DeploymentTarget.KUBERNETES
    scales_itself = True  # its HorizontalPodAutoscaler owns the replica count

    def __init__(
        self,
        api: client.ApiClient,
        options: K8sOptions,
        directory: DeploymentDirectory | None = None,
        *,
        request_timeout_s: float = 30.0,
        reapply_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._api, self._options, self._directory = api, options, directory
        self._timeout, self._reapply_s, self._clock = request_timeout_s, reapply_seconds, clock
        self._apps = client.AppsV1Api(api)
        core, hpa, policy = client.CoreV1Api(api), client.AutoscalingV2Api(api), client.PolicyV1Api(api)
        self._kinds = {
            "Service": _Kind(core.patch_namespaced_service, core.delete_namespaced_service),
            "Deployment": _Kind(
                self._apps.patch_namespaced_deployment, self._apps.delete_namespaced_deployment
            ),
            "PodDisruptionBudget": _Kind(
                policy.patch_namespaced_pod_disruption_budget, policy.delete_namespaced_pod_disruption_budget
            ),
            "HorizontalPodAutoscaler": _Kind(
                hpa.patch_namespaced_horizontal_pod_autoscaler,
                hpa.delete_namespaced_horizontal_pod_autoscaler,
            ),
        }
        self._applied: dict[str, tuple[str, float]] = {}  # object name -> (manifests' digest, when)
        self._names: dict[str, str] = {}  # deployment id -> object name, learnt from ensure and lists
        self._retired: set[tuple[str, int]] = set()  # (deployment id, revision) whose rollout was given up

    @classmethod
    def from_settings(
        cls, settings: Settings, directory: DeploymentDirectory | None = None
    ) -> KubernetesDeployer:
        options = K8sOptions(
            namespace=settings.k8s_namespace,
            image=settings.k8s_image,
            secret_name=settings.k8s_secret_name,
            termination_grace_seconds=math.ceil(settings.graceful_shutdown_seconds) + 10,
        )
        api = api_client(settings.kubeconfig)
        return cls(api, options, directory, request_timeout_s=settings.k8s_request_timeout_seconds)

    def ensure(self, spec: ReplicaSpec) -> RevisionState:
        name = object_name(spec.tenant_id, spec.deployment)
        self._names[spec.deployment_id] = name
        deployment = self._read(name)
        if (
            deployment is not None
            and _annotations(deployment).get(DEPLOYMENT_ID_ANNOTATION) == spec.deployment_id
        ):
            running = template_revision(deployment)
            if (
                running is not None
                and spec.revision < running
                and (spec.deployment_id, running) not in self._retired
            ):
                return self._state(deployment, spec)  # a newer revision rolls out: report the old pods
        manifests = render(spec, self._options, self._scaling(spec))
        digest = hashlib.sha256(json.dumps(manifests, sort_keys=True).encode()).hexdigest()
        last = self._applied.get(name)
        fresh = last is not None and last[0] == digest and self._clock() - last[1] < self._reapply_s
        if deployment is None or not fresh:
            deployment = self._apply_all(name, manifests)
            self._applied[name] = (digest, self._clock())
            self._retired = {r for r in self._retired if r[0] != spec.deployment_id}
        return self._state(deployment, spec)

    def observe(self, deployment_id: str, revision: int) -> RevisionState | None:
        deployment = self._find(deployment_id)
        return None if deployment is None else revision_state(deployment, revision)

    def retire(self, deployment_id: str, revision: int, drain_s: float) -> None:
        """Deletes the objects when ``revision`` is the one they run and the deployment is gone, or
        has no serving revision to go back to; marks it retired when it has (see the module doc).

        An older revision's pods were already replaced by the rolling update. Draining is Kubernetes'
        too: a pod gets ``termination_grace_seconds`` to finish (``drain_s`` is not used)."""
        deployment = self._find(deployment_id)
        if deployment is None or template_revision(deployment) != revision:
            return
        live = self._live(deployment)
        if self._directory is not None and (live is None or live.serving is None):
            self._delete_all(str(deployment["metadata"]["name"]), deployment_id)  # nothing to go back to
        elif live is None or live.serving is None or live.serving.number != revision:
            self._retired.add((deployment_id, revision))  # the serving revision's next ensure rolls back

    def revisions(self) -> dict[str, list[int]]:
        running: dict[str, list[int]] = {}
        for deployment in self._list(f"{MANAGED_BY_LABEL}={MANAGER}"):
            deployment_id = _annotations(deployment).get(DEPLOYMENT_ID_ANNOTATION)
            revision = template_revision(deployment)
            if deployment_id and revision is not None:
                running.setdefault(deployment_id, []).append(revision)
        return running

    def remove(self, deployment_id: str) -> None:
        """Deletes every object of the deployment (those already gone are no error)."""
        deployment = self._find(deployment_id)
        if deployment is not None:
            self._delete_all(str(deployment["metadata"]["name"]), deployment_id)

    def close(self) -> None:
        self._api.close()  # type: ignore[no-untyped-call]

    def _state(self, deployment: dict[str, Any], spec: ReplicaSpec) -> RevisionState:
        state = revision_state(deployment, spec.revision)
        return state or RevisionState(revision=spec.revision, desired=spec.replicas, ready=0)

    def _scaling(self, spec: ReplicaSpec) -> Scaling | None:
        found = None if self._directory is None else self._directory.find(spec.tenant_id, spec.deployment)
        return found.scaling if found is not None and found.id == spec.deployment_id else None

    def _live(self, deployment: dict[str, Any]) -> Deployment | None:
        """The live deployment whose objects these are (None when it is gone, or unknown)."""
        if self._directory is None:
            return None
        annotations = _annotations(deployment)
        found = self._directory.find(
            annotations.get(TENANT_ANNOTATION, ""), annotations.get(NAME_ANNOTATION, "")
        )
        return found if found is not None and found.id == annotations.get(DEPLOYMENT_ID_ANNOTATION) else None

    def _apply_all(self, name: str, manifests: list[dict[str, Any]]) -> dict[str, Any]:
        applied = {manifest["kind"]: self._apply(name, manifest) for manifest in manifests}
        for kind in KINDS:
            if kind not in applied:  # the autoscaler of a deployment whose autoscaling went off
                self._delete(kind, name)
        return applied["Deployment"]

    def _apply(self, name: str, manifest: dict[str, Any]) -> dict[str, Any]:
        kind = manifest["kind"]
        try:
            response = self._kinds[kind].patch(
                name,
                self._options.namespace,
                manifest,
                field_manager=MANAGER,
                force=True,
                _content_type=APPLY,
                _preload_content=False,
                _request_timeout=self._timeout,
            )
        except ApiException as error:
            raise _unavailable(f"apply {kind} {name}", error) from error
        return _json(response)

    def _delete_all(self, name: str, deployment_id: str) -> None:
        for kind in KINDS:
            self._delete(kind, name)
        self._applied.pop(name, None)
        self._names.pop(deployment_id, None)

    def _delete(self, kind: str, name: str) -> None:
        try:
            self._kinds[kind].delete(
                name, self._options.namespace, _preload_content=False, _request_timeout=self._timeout
            )
        except ApiException as error:
            if error.status != 404:
                raise _unavailable(f"delete {kind} {name}", error) from error

    def _read(self, name: str) -> dict[str, Any] | None:
        try:
            response = self._apps.read_namespaced_deployment(
                name, self._options.namespace, _preload_content=False, _request_timeout=self._timeout
            )
        except ApiException as error:
            if error.status == 404:
                return None
            raise _unavailable(f"read Deployment {name}", error) from error
        return _json(response)

    def _list(self, selector: str) -> list[dict[str, Any]]:
        try:
            response = self._apps.list_namespaced_deployment(
                self._options.namespace,
                label_selector=selector,
                _preload_content=False,
                _request_timeout=self._timeout,
            )
        except ApiException as error:
            raise _unavailable("list Deployments", error) from error
        items = _json(response).get("items") or []
        # The selector is filtered again here: a server that ignores it must not widen the answer.
        wanted = dict(part.split("=", 1) for part in selector.split(","))
        return [item for item in items if wanted.items() <= _labels(item).items()]

    def _find(self, deployment_id: str) -> dict[str, Any] | None:
        """The Deployment of ``deployment_id``: by the name ``ensure`` used, else by its label."""
        name = self._names.get(deployment_id)
        deployment = self._read(name) if name is not None else None
        if deployment is None:
            selector = f"{MANAGED_BY_LABEL}={MANAGER},{DEPLOYMENT_ID_LABEL}={label_value(deployment_id)}"
            matches = [
                d
                for d in self._list(selector)
                if _annotations(d).get(DEPLOYMENT_ID_ANNOTATION) == deployment_id
            ]
            deployment = matches[0] if matches else None
        if deployment is not None and _annotations(deployment).get(DEPLOYMENT_ID_ANNOTATION) != deployment_id:
            return None  # a name learnt earlier now holds another deployment's objects
        if deployment is not None:
            self._names[deployment_id] = str(deployment["metadata"]["name"])
        return deployment


def _json(response: Any) -> dict[str, Any]:
    data = json.loads(response.data or b"{}")
    return data if isinstance(data, dict) else {}


def _annotations(obj: dict[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("annotations") or {})


def _labels(obj: dict[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


def _unavailable(action: str, error: ApiException) -> Unavailable:
    message = error.reason or ""
    try:
        message = json.loads(error.body or "{}").get("message") or message
    except (ValueError, AttributeError):
        pass
    return Unavailable(
        f"Kubernetes could not {action}: {error.status} {message}".strip(),
        extra={"status": error.status},
    )
