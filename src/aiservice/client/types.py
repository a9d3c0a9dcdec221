"""The typed objects the SDK returns, read from the service's camelCase JSON.

Each is a frozen dataclass with the fields most callers want and a short ``repr``; ``raw`` keeps the whole
document as the service sent it (newer fields included) for anything else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


def _time(value: Any) -> datetime | None:
    return datetime.fromisoformat(value) if isinstance(value, str) and value else None


def _dict(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}


@dataclass(frozen=True)
class Model:
    id: str
    name: str
    framework: str
    description: str = ""
    category: str | None = None
    tags: tuple[str, ...] = ()
    latest_version: int | None = None
    input_schema: dict[str, Any] = field(default_factory=dict, repr=False)
    output_schema: dict[str, Any] = field(default_factory=dict, repr=False)
    configuration: dict[str, Any] = field(default_factory=dict, repr=False)
    aliases: dict[str, int] | None = None
    created_at: datetime | None = field(default=None, repr=False)
    updated_at: datetime | None = field(default=None, repr=False)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Model:
        return cls(
            id=str(data["id"]),
            name=str(data["name"]),
            framework=str(data["framework"]),
            description=str(data.get("description") or ""),
            category=data.get("category"),
            tags=tuple(data.get("tags") or ()),
            latest_version=data.get("latestVersion"),
            input_schema=_dict(data.get("inputSchema")),
            output_schema=_dict(data.get("outputSchema")),
            configuration=_dict(data.get("configuration")),
            aliases=dict(data["aliases"]) if isinstance(data.get("aliases"), Mapping) else None,
            created_at=_time(data.get("createdAt")),
            updated_at=_time(data.get("updatedAt")),
            raw=dict(data),
        )


@dataclass(frozen=True)
class Artifact:
    digest: str
    size_bytes: int
    filename: str
    media_type: str = field(default="", repr=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Artifact:
        return cls(
            digest=str(data["digest"]),
            size_bytes=int(data["sizeBytes"]),
            filename=str(data["filename"]),
            media_type=str(data.get("mediaType") or ""),
        )


@dataclass(frozen=True)
class Version:
    model_id: str
    version: int
    stage: str
    artifact: Artifact
    metrics: dict[str, Any] = field(default_factory=dict)
    id: str = field(default="", repr=False)
    description: str = field(default="", repr=False)
    params: dict[str, Any] = field(default_factory=dict, repr=False)
    source_run: str | None = field(default=None, repr=False)
    signature: dict[str, Any] | None = field(default=None, repr=False)
    serving: dict[str, Any] = field(default_factory=dict, repr=False)
    created_at: datetime | None = field(default=None, repr=False)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Version:
        return cls(
            model_id=str(data["modelId"]),
            version=int(data["version"]),
            stage=str(data["stage"]),
            artifact=Artifact.from_json(data["artifact"]),
            metrics=_dict(data.get("metrics")),
            id=str(data.get("id", "")),
            description=str(data.get("description") or ""),
            params=_dict(data.get("params")),
            source_run=data.get("sourceRun"),
            signature=_dict(data["signature"]) if data.get("signature") else None,
            serving=_dict(data.get("serving")),
            created_at=_time(data.get("createdAt")),
            raw=dict(data),
        )


@dataclass(frozen=True)
class Alias:
    alias: str
    version: int
    updated_at: datetime | None = field(default=None, repr=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Alias:
        return cls(str(data["alias"]), int(data["version"]), _time(data.get("updatedAt")))


@dataclass(frozen=True)
class Prediction:
    """One answer: the prediction, and with ``include_confidence`` the confidence and probabilities."""

    prediction: Any
    model_id: str
    version: int
    confidence: float | None = None
    probabilities: dict[str, float] | None = None
    feature_importance: dict[str, Any] | None = field(default=None, repr=False)
    form: str = field(default="", repr=False)
    latency_ms: float = field(default=0.0, repr=False)
    request_id: str | None = field(default=None, repr=False)
    experiment: dict[str, str] | None = field(default=None, repr=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Prediction:
        return cls(
            prediction=data.get("prediction"),
            model_id=str(data.get("modelId", "")),
            version=int(data.get("version", 0)),
            confidence=data.get("confidence"),
            probabilities=data.get("probabilities"),
            feature_importance=data.get("featureImportance"),
            form=str(data.get("form", "")),
            latency_ms=float(data.get("latencyMs") or 0.0),
            request_id=data.get("requestId"),
            experiment=data.get("experiment"),
        )


@dataclass(frozen=True)
class JobState:
    """A training job as the service last reported it."""

    id: str
    model_id: str
    status: str
    progress: float
    epoch: int | None = None
    epochs: int | None = None
    version: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    error: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list, repr=False)
    device: str | None = field(default=None, repr=False)
    created_at: datetime | None = field(default=None, repr=False)
    finished_at: datetime | None = field(default=None, repr=False)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_STATUSES

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> JobState:
        return cls(
            id=str(data["id"]),
            model_id=str(data["modelId"]),
            status=str(data["status"]),
            progress=float(data.get("progress") or 0.0),
            epoch=data.get("epoch"),
            epochs=data.get("epochs"),
            version=data.get("version"),
            metrics=_dict(data.get("metrics")),
            error=_dict(data["error"]) if data.get("error") else None,
            history=list(data.get("history") or ()),
            device=data.get("device"),
            created_at=_time(data.get("createdAt")),
            finished_at=_time(data.get("finishedAt")),
            raw=dict(data),
        )


FINISHED_STATUSES = frozenset({"succeeded", "failed", "cancelled"})


@dataclass(frozen=True)
class JobEvent:
    """One Server-Sent Event of a job's progress stream: ``status`` or ``progress``, with its data."""

    id: int
    event: str
    data: dict[str, Any]

    @property
    def final(self) -> bool:
        return self.event == "status" and self.data.get("status") in FINISHED_STATUSES


@dataclass(frozen=True)
class Deployment:
    id: str
    name: str
    model_id: str
    status: str
    environment: str
    target: str
    version: int | None = None  # the version the latest revision asks for
    serving_version: int | None = None
    replicas: dict[str, int] = field(default_factory=dict)
    reason: str = field(default="", repr=False)
    endpoints: dict[str, str] = field(default_factory=dict, repr=False)
    revision: int | None = field(default=None, repr=False)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Deployment:
        revision = _dict(data.get("revision"))
        serving = _dict(data.get("serving"))
        return cls(
            id=str(data["id"]),
            name=str(data["name"]),
            model_id=str(data["modelId"]),
            status=str(data["status"]),
            environment=str(data.get("environment", "")),
            target=str(data.get("target", "")),
            version=revision.get("version"),
            serving_version=serving.get("version"),
            replicas=_dict(data.get("replicas")),
            reason=str(data.get("reason") or ""),
            endpoints=_dict(data.get("endpoints")),
            revision=revision.get("revision"),
            raw=dict(data),
        )


@dataclass(frozen=True)
class Experiment:
    id: str
    name: str
    model_id: str
    mode: str
    status: str
    champion: str
    arms: tuple[dict[str, Any], ...] = ()
    winner: str | None = None
    weights: dict[str, float] = field(default_factory=dict, repr=False)
    reason: str = field(default="", repr=False)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Experiment:
        return cls(
            id=str(data["id"]),
            name=str(data["name"]),
            model_id=str(data["modelId"]),
            mode=str(data["mode"]),
            status=str(data["status"]),
            champion=str(data.get("champion", "")),
            arms=tuple(dict(a) for a in data.get("arms") or ()),
            winner=data.get("winner"),
            weights=_dict(data.get("weights")),
            reason=str(data.get("reason") or ""),
            raw=dict(data),
        )


@dataclass(frozen=True)
class ExperimentResults:
    """Per arm figures and the verdict, as the service computes them (``raw`` has everything)."""

    arms: dict[str, Any]
    verdict: dict[str, Any]
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ExperimentResults:
        arms = data.get("arms")
        by_name = (
            {str(a.get("arm", a.get("name", i))): a for i, a in enumerate(arms)}
            if isinstance(arms, list)
            else _dict(arms)
        )
        return cls(arms=by_name, verdict=_dict(data.get("verdict")), raw=dict(data))


@dataclass(frozen=True)
class Dataset:
    name: str
    format: str
    size_bytes: int
    uri: str
    sha256: str = field(default="", repr=False)
    created_at: datetime | None = field(default=None, repr=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Dataset:
        return cls(
            name=str(data["name"]),
            format=str(data["format"]),
            size_bytes=int(data["sizeBytes"]),
            uri=str(data["uri"]),
            sha256=str(data.get("sha256", "")),
            created_at=_time(data.get("createdAt")),
        )


@dataclass(frozen=True)
class Page:
    """One page of a listing and the cursor of the next (None on the last)."""

    items: list[dict[str, Any]]
    next_cursor: str | None


@dataclass(frozen=True)
class StudyState:
    """An AutoML study as the service last reported it: its trials, leaderboard (best first), the best
    trial and, once it succeeded, the version that trial was registered as."""

    id: str
    model_id: str
    status: str
    task: str
    metric: str
    best: dict[str, Any] | None = None
    version: int | None = None
    beats_baseline: bool | None = None
    error: str | None = None
    trials: list[dict[str, Any]] = field(default_factory=list, repr=False)
    leaderboard: list[dict[str, Any]] = field(default_factory=list, repr=False)
    result: dict[str, Any] | None = field(default=None, repr=False)
    budget: dict[str, Any] = field(default_factory=dict, repr=False)
    algorithms: tuple[str, ...] = field(default=(), repr=False)
    created_at: datetime | None = field(default=None, repr=False)
    finished_at: datetime | None = field(default=None, repr=False)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_STATUSES

    @property
    def best_score(self) -> float | None:
        """The best trial's cross-validation score (in ``metric``), when a trial completed."""
        score = (self.best or {}).get("cvScore")
        return float(score) if isinstance(score, int | float) else None

    def summary(self) -> str:
        """``status, N trials, best ALGORITHM METRIC=SCORE, version V``: what a repr shows."""
        best = self.best or {}
        shown = (
            f"{best.get('algorithm')} {self.metric}={self.best_score:.4g}"
            if self.best_score is not None
            else None
        )
        return f"status={self.status!r}, trials={len(self.trials)}, best={shown!r}, version={self.version}"

    def __repr__(self) -> str:
        return f"StudyState(id={self.id!r}, {self.summary()})"

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> StudyState:
        return cls(
            id=str(data["id"]),
            model_id=str(data["modelId"]),
            status=str(data["status"]),
            task=str(data.get("task", "")),
            metric=str(data.get("metric", "")),
            best=_dict(data["best"]) if data.get("best") else None,
            version=data.get("version"),
            beats_baseline=data.get("beatsBaseline"),
            error=data.get("error"),
            trials=list(data.get("trials") or ()),
            leaderboard=list(data.get("leaderboard") or ()),
            result=_dict(data["result"]) if data.get("result") else None,
            budget=_dict(data.get("budget")),
            algorithms=tuple(data.get("algorithms") or ()),
            created_at=_time(data.get("createdAt")),
            finished_at=_time(data.get("finishedAt")),
            raw=dict(data),
        )
