"""The Kubernetes objects of one deployment revision, rendered as plain manifests (a pure function).

Per deployment: an ``apps/v1`` Deployment running the service image as a model server, a ``v1``
Service (port 80 to the pods' 8080), a ``policy/v1`` PodDisruptionBudget and, when autoscaling is on,
an ``autoscaling/v2`` HorizontalPodAutoscaler. Every manifest is checked offline, in the tests,
against the strict schemas of the Kubernetes versions in ``SUPPORTED_KUBERNETES``.

Choices a reader would ask about:

- **Replicas.** With an HPA the Deployment carries no ``replicas``, so the autoscaler owns the count
  and a re-apply does not fight it. Without one (autoscaling off, or no scaling known) the count is
  the spec's. A dev deployment may have ``minReplicas`` 0, which ``autoscaling/v2`` refuses unless
  the alpha ``HPAScaleToZero`` gate is on: such a deployment gets no HPA and the spec's count (0 while
  the reconciler has it scaled to zero).
- **Requests equal limits.** A model server's memory is its models, so a request below the limit only
  invites an OOM kill under node pressure; equal CPU too gives the pod the Guaranteed QoS class and
  steady latency, and makes the HPA's utilisation (a percentage of the *request*) the percentage of
  the *limit* that ``targetCPUUtilization`` means. Without a CPU limit the CPU target becomes an
  average value in millicores of one core, which is what the percentage means then.
- **Custom metrics.** Concurrency and latency targets are ``Pods`` metrics named
  ``aiservice_inflight_requests`` and ``aiservice_request_latency_p95_ms``, gauges every replica
  exports on its /metrics (``serve_model.expose_load``): the cluster must serve them through the
  custom metrics API (e.g. a prometheus-adapter rule over the replicas' /metrics, which the pod
  template annotates for scraping); without it the HPA reports the metric missing.
- **Disruption budget.** ``minAvailable: 1`` when at least two replicas are the floor, otherwise
  ``maxUnavailable: 1``: a budget of ``minAvailable: 1`` over a single replica would block every
  node drain for good.
- **Selector.** Pods are selected by ``app.kubernetes.io/name`` and ``app.kubernetes.io/instance``
  set to the object name (which holds the tenant), never by the deployment's bare name: two tenants'
  ``fraud`` deployments would otherwise select each other's pods. The selector is immutable, so it
  holds nothing that changes between revisions; the revision label sits on the pod template, where
  a new value makes Kubernetes roll the pods.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from aiservice.application.deploying.ports import ReplicaSpec
from aiservice.domain.deployments import Scaling, ScalingMetric
from aiservice.infrastructure.deploy.k8s_names import label_value, object_name

# The three newest Kubernetes minor versions whose schemas the installed kubernetes-validate bundles.
SUPPORTED_KUBERNETES = ("1.35", "1.36", "1.37")

APP = "aiservice-model"
MANAGER = "aiservice"  # the managed-by label and the server-side apply field manager
NAME_LABEL = "app.kubernetes.io/name"
INSTANCE_LABEL = "app.kubernetes.io/instance"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
TENANT_LABEL = "aiservice.io/tenant"
DEPLOYMENT_LABEL = "aiservice.io/deployment"
DEPLOYMENT_ID_LABEL = "aiservice.io/deployment-id"
MODEL_LABEL = "aiservice.io/model"
VERSION_LABEL = "aiservice.io/version"
REVISION_LABEL = "aiservice.io/revision"
DEPLOYMENT_ID_ANNOTATION = "aiservice.io/deployment-id"
TENANT_ANNOTATION = "aiservice.io/tenant-id"
NAME_ANNOTATION = "aiservice.io/deployment-name"

CONTAINER_PORT = 8080
SERVICE_PORT = 80
RUN_AS = 10001  # the image's aiservice user and group (deploy/Dockerfile)
DATA_DIR = "/var/lib/aiservice"  # the image's DATA_DIR, an emptyDir under a read-only root
INFLIGHT_METRIC = "aiservice_inflight_requests"
LATENCY_METRIC = "aiservice_request_latency_p95_ms"


@dataclass(frozen=True)
class K8sOptions:
    """What every deployment's objects share: where they go, what they run."""

    namespace: str = "aiservice"
    image: str = "ghcr.io/aiservice/aiservice:0.1.0"
    secret_name: str = "aiservice"  # DATABASE_URL, REPLICA_TOKEN, store settings: the pods' env
    termination_grace_seconds: int = 40  # the server's graceful shutdown plus some slack
    progress_deadline_seconds: int = 600  # a rollout not progressing this long is reported failed


def render(spec: ReplicaSpec, options: K8sOptions, scaling: Scaling | None = None) -> list[dict[str, Any]]:
    """The manifests of ``spec``'s revision: Service, Deployment, PodDisruptionBudget, HPA (if any).

    ``scaling`` is the deployment's replica bounds and autoscaling; None renders a fixed count."""
    name = object_name(spec.tenant_id, spec.deployment)
    hpa = _autoscaler(spec, name, options, scaling)
    floor = spec.replicas if hpa is None or scaling is None else scaling.min_replicas
    manifests = [
        _service(spec, name, options),
        _deployment(spec, name, options, None if hpa else spec.replicas),
        _disruption_budget(spec, name, options, floor),
    ]
    return [*manifests, hpa] if hpa else manifests


def selector_labels(name: str) -> dict[str, str]:
    return {NAME_LABEL: APP, INSTANCE_LABEL: name}


def _labels(spec: ReplicaSpec, name: str) -> dict[str, str]:
    return {
        **selector_labels(name),
        MANAGED_BY_LABEL: MANAGER,
        TENANT_LABEL: label_value(spec.tenant_id),
        DEPLOYMENT_LABEL: spec.deployment,
        DEPLOYMENT_ID_LABEL: label_value(spec.deployment_id),
        MODEL_LABEL: label_value(spec.model_id),
        VERSION_LABEL: str(spec.version),
        REVISION_LABEL: str(spec.revision),
    }


def _metadata(spec: ReplicaSpec, name: str, options: K8sOptions) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": options.namespace,
        "labels": _labels(spec, name),
        "annotations": {
            DEPLOYMENT_ID_ANNOTATION: spec.deployment_id,
            TENANT_ANNOTATION: spec.tenant_id,
            NAME_ANNOTATION: spec.deployment,
        },
    }


def _service(spec: ReplicaSpec, name: str, options: K8sOptions) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(spec, name, options),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(name),
            "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": "http", "protocol": "TCP"}],
        },
    }


def _deployment(spec: ReplicaSpec, name: str, options: K8sOptions, replicas: int | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "revisionHistoryLimit": 3,
        "progressDeadlineSeconds": options.progress_deadline_seconds,
        # A new revision's pod must be ready before an old one goes: capacity never drops.
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        "selector": {"matchLabels": selector_labels(name)},
        "template": {
            "metadata": {
                "labels": _labels(spec, name),
                "annotations": {
                    "prometheus.io/scrape": "true",
                    "prometheus.io/port": str(CONTAINER_PORT),
                    "prometheus.io/path": "/metrics",
                },
            },
            "spec": _pod(spec, options),
        },
    }
    if replicas is not None:
        body = {"replicas": replicas, **body}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(spec, name, options),
        "spec": body,
    }


def _pod(spec: ReplicaSpec, options: K8sOptions) -> dict[str, Any]:
    command = ["aiservice", "serve-model", "--deployment", spec.deployment, "--tenant", spec.tenant_id]
    command += ["--revision", str(spec.revision), "--host", "0.0.0.0", "--port", str(CONTAINER_PORT)]
    container: dict[str, Any] = {
        "name": "model-server",
        "image": options.image,
        "imagePullPolicy": "IfNotPresent",
        "command": command,
        "ports": [{"name": "http", "containerPort": CONTAINER_PORT, "protocol": "TCP"}],
        "envFrom": [{"secretRef": {"name": options.secret_name}}],
        # One server process a pod (replicas are pods); without WORKERS it would start one per node CPU.
        "env": [{"name": "DATA_DIR", "value": DATA_DIR}, {"name": "WORKERS", "value": "1"}],
        # The health router's paths: /health answers without I/O; /health/ready checks dependencies.
        "readinessProbe": _probe("/health/ready", period=5),
        # serve-model listens only once its version is loaded and warm: up to 10 minutes of startup
        # before liveness applies (a large model must not be killed while it loads).
        "startupProbe": {**_probe("/health", period=5), "failureThreshold": 120},
        "livenessProbe": _probe("/health", period=10),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "data", "mountPath": DATA_DIR}, {"name": "tmp", "mountPath": "/tmp"}],
    }
    resources = _resources(spec)
    if resources:
        container["resources"] = {"requests": resources, "limits": resources}
    return {
        "automountServiceAccountToken": False,  # a model server never calls the Kubernetes API
        "terminationGracePeriodSeconds": options.termination_grace_seconds,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [{"name": "data", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}}],
    }


def _probe(path: str, period: int) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": "http"},
        "periodSeconds": period,
        "timeoutSeconds": 3,
        "failureThreshold": 3,
    }


def _resources(spec: ReplicaSpec) -> dict[str, str]:
    resources: dict[str, str] = {}
    if spec.cpu_millicores is not None:
        resources["cpu"] = f"{spec.cpu_millicores}m"
    if spec.memory_bytes is not None:
        resources["memory"] = str(spec.memory_bytes)
    return resources


def _autoscaler(
    spec: ReplicaSpec, name: str, options: K8sOptions, scaling: Scaling | None
) -> dict[str, Any] | None:
    if scaling is None or not scaling.autoscaling.enabled or scaling.min_replicas < 1:
        return None
    autoscaling = scaling.autoscaling
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(spec, name, options),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": scaling.min_replicas,
            "maxReplicas": max(scaling.min_replicas, scaling.max_replicas),
            "metrics": [_metric(autoscaling.metric, autoscaling.target, spec.cpu_millicores)],
            # The cool-down holds scale-downs back; scale-ups answer load at once (Kubernetes' default).
            "behavior": {
                "scaleDown": {"stabilizationWindowSeconds": math.ceil(autoscaling.cooldown_seconds)},
                "scaleUp": {"stabilizationWindowSeconds": 0},
            },
        },
    }


def _metric(metric: ScalingMetric, target: float, cpu_millicores: int | None) -> dict[str, Any]:
    if metric == ScalingMetric.CPU:
        value: dict[str, Any]
        if cpu_millicores is None:  # no request to take a percentage of: a share of one core
            value = {"type": "AverageValue", "averageValue": f"{math.ceil(target * 10)}m"}
        else:
            value = {"type": "Utilization", "averageUtilization": math.ceil(target)}
        return {"type": "Resource", "resource": {"name": "cpu", "target": value}}
    # Custom metrics: served by the cluster's custom metrics API (see the module doc).
    name = INFLIGHT_METRIC if metric == ScalingMetric.CONCURRENCY else LATENCY_METRIC
    return {
        "type": "Pods",
        "pods": {
            "metric": {"name": name},
            "target": {"type": "AverageValue", "averageValue": _quantity(target)},
        },
    }


def _disruption_budget(spec: ReplicaSpec, name: str, options: K8sOptions, floor: int) -> dict[str, Any]:
    body: dict[str, Any] = {"minAvailable": 1} if floor > 1 else {"maxUnavailable": 1}
    body["selector"] = {"matchLabels": selector_labels(name)}
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(spec, name, options),
        "spec": body,
    }


def _quantity(value: float) -> str:
    """A Kubernetes quantity for ``value``: whole numbers as such, others in thousandths (``2500m``)."""
    return str(int(value)) if value == int(value) else f"{round(value * 1000)}m"
