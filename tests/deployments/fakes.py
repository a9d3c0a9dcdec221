"""A stand-in for the ``Deployer`` port in the reconcile loop's tests: it records what it was asked and
reports what the test says the replicas do. The real deployers have their own tests with real
processes (tests/deploy_local) and a Kubernetes API emulator (tests/deploy_k8s)."""

from __future__ import annotations

from dataclasses import dataclass, field

from aiservice.application.deploying.ports import ReplicaSpec, RevisionState
from aiservice.domain.deployments import DeploymentTarget


@dataclass
class FakeDeployer:
    target: DeploymentTarget = DeploymentTarget.LOCAL
    scales_itself: bool = False
    endpoint: str = "http://127.0.0.1:9"
    warm: bool = True  # replicas become ready as soon as they are asked for
    failing: dict[int, str] = field(default_factory=dict)  # version -> why its replicas cannot start
    running: dict[tuple[str, int], ReplicaSpec] = field(default_factory=dict)
    retired: list[tuple[str, int]] = field(default_factory=list)
    load: dict[str, RevisionState] = field(default_factory=dict)  # deployment id -> metrics to report

    def ensure(self, spec: ReplicaSpec) -> RevisionState:
        self.running[(spec.deployment_id, spec.revision)] = spec
        return self._state(spec)

    def _state(self, spec: ReplicaSpec) -> RevisionState:
        if spec.version in self.failing:
            return RevisionState(spec.revision, spec.replicas, 0, failed=self.failing[spec.version])
        ready = spec.replicas if self.warm else 0
        metrics = self.load.get(spec.deployment_id)
        return RevisionState(
            spec.revision,
            spec.replicas,
            ready,
            endpoint=self.endpoint if ready else None,
            in_flight=metrics.in_flight if metrics else 0.0,
            cpu_percent=metrics.cpu_percent if metrics else 0.0,
            p95_ms=metrics.p95_ms if metrics else None,
        )

    def observe(self, deployment_id: str, revision: int) -> RevisionState | None:
        spec = self.running.get((deployment_id, revision))
        return None if spec is None else self._state(spec)

    def retire(self, deployment_id: str, revision: int, drain_s: float) -> None:
        self.running.pop((deployment_id, revision), None)
        self.retired.append((deployment_id, revision))

    def revisions(self) -> dict[str, list[int]]:
        found: dict[str, list[int]] = {}
        for deployment_id, revision in self.running:
            found.setdefault(deployment_id, []).append(revision)
        return found

    def close(self) -> None:
        self.running.clear()
