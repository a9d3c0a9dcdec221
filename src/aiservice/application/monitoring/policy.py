"""A model's monitoring policy: when its traffic counts as drifted (``DriftThresholds``), how often it
is checked on a schedule, over which window, and what happens when it drifts.

Actions, taken when a check finds drift or the rolling accuracy (with feedback) of its window below
``accuracyFloor`` (``monitoring/actions.py`` carries them out as ``system:monitoring``): ``alert`` (the
default: a ``ModelDriftDetected`` event, deliverable to webhooks, and the drift score metric, plus a
recorded action), ``retrain`` (a training job on ``retrain.datasetId`` with the current version's
configuration), ``promote`` (needs ``retrain``: a retrained version that beats the current one on the
dataset's held-out rows goes into a canary experiment, ``canary`` its plan, which promotes it or rolls it
back) and ``rollback`` (a deployment whose serving revision rolled out within ``windowHours`` goes back
to its previous one). ``enabled: false`` switches every automatic action off; the report is still stored.
No second action of a kind runs for the model within ``cooldownMinutes``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiservice.application.monitoring.drift import DriftThresholds
from aiservice.domain.errors import FieldError, InvalidInput
from aiservice.domain.experiments import CanaryPlan

MAX_SCHEDULE_MINUTES = 7 * 24 * 60
MIN_SCHEDULE_MINUTES = 5
MAX_WINDOW_HOURS = 90 * 24
ACTIONS = frozenset({"alert", "retrain", "promote", "rollback"})
DEFAULT_COOLDOWN_MINUTES = 60
MAX_COOLDOWN_MINUTES = 30 * 24 * 60
_RETRAIN_FIELDS = ("datasetId",)
_THRESHOLD_FIELDS = {
    "psi": (float, 0.0, math.inf, False),
    "pValue": (float, 0.0, 1.0, False),
    "ksStatistic": (float, 0.0, 1.0, True),
    "chi2Effect": (float, 0.0, math.inf, True),
    "auc": (float, 0.5, 1.0, True),
    "minWindow": (int, 20, 100_000, True),
}
_FIELDS = (
    "thresholds",
    "scheduleMinutes",
    "windowHours",
    "accuracyFloor",
    "actions",
    "enabled",
    "retrain",
    "canary",
    "cooldownMinutes",
)


@dataclass(frozen=True)
class MonitoringPolicy:
    thresholds: DriftThresholds = field(default_factory=DriftThresholds)
    schedule_minutes: int | None = None  # None: checked on demand only
    window_hours: int = 24  # a check compares the traffic logged in the last window_hours
    accuracy_floor: float | None = None
    actions: tuple[str, ...] = ("alert",)
    enabled: bool = True  # False: no automatic action at all, only the stored report
    retrain_dataset: str | None = None  # retrain.datasetId: the uploaded dataset a retraining job reads
    canary: CanaryPlan | None = None  # the promotion's canary plan (None: the experiments' defaults)
    cooldown_minutes: int = DEFAULT_COOLDOWN_MINUTES

    def acts(self, kind: str) -> bool:
        return self.enabled and kind in self.actions

    @classmethod
    def parse(cls, raw: Mapping[str, Any], where: str = "body") -> MonitoringPolicy:
        """A policy from the API's fields; fields left out take the defaults. Raises ``InvalidInput``
        naming every bad field."""
        errors = [FieldError(f"{where}.{name}", "unknown field") for name in raw if name not in _FIELDS]
        thresholds = _thresholds(raw.get("thresholds", {}), f"{where}.thresholds", errors)
        schedule = raw.get("scheduleMinutes")
        if schedule is not None and not _whole(schedule, MIN_SCHEDULE_MINUTES, MAX_SCHEDULE_MINUTES):
            errors.append(
                FieldError(
                    f"{where}.scheduleMinutes",
                    f"must be null or whole minutes, {MIN_SCHEDULE_MINUTES}-{MAX_SCHEDULE_MINUTES}",
                )
            )
        window = raw.get("windowHours", 24)
        if not _whole(window, 1, MAX_WINDOW_HOURS):
            errors.append(FieldError(f"{where}.windowHours", f"must be whole hours, 1-{MAX_WINDOW_HOURS}"))
        floor = raw.get("accuracyFloor")
        if floor is not None and not _number(floor, 0.0, 1.0):
            errors.append(FieldError(f"{where}.accuracyFloor", "must be null or a number in [0, 1]"))
        actions = raw.get("actions", ["alert"])
        if not isinstance(actions, list) or any(a not in ACTIONS for a in actions):
            errors.append(FieldError(f"{where}.actions", f"must be a list of: {', '.join(sorted(ACTIONS))}"))
            actions = []
        enabled = raw.get("enabled", True)
        if not isinstance(enabled, bool):
            errors.append(FieldError(f"{where}.enabled", "must be true or false"))
        cooldown = raw.get("cooldownMinutes", DEFAULT_COOLDOWN_MINUTES)
        if not _whole(cooldown, 0, MAX_COOLDOWN_MINUTES):
            errors.append(
                FieldError(f"{where}.cooldownMinutes", f"must be whole minutes, 0-{MAX_COOLDOWN_MINUTES}")
            )
        dataset = _retrain(raw.get("retrain"), "retrain" in actions, f"{where}.retrain", errors)
        if "promote" in actions and "retrain" not in actions:
            errors.append(
                FieldError(f"{where}.actions", "promote needs retrain: it promotes a retrained version")
            )
        canary = _canary(raw.get("canary"), f"{where}.canary", errors)
        if errors or thresholds is None:
            fields = ", ".join(e.field for e in errors)
            raise InvalidInput(f"Invalid monitoring policy: {fields}", errors=errors)
        return cls(
            thresholds=thresholds,
            schedule_minutes=None if schedule is None else int(schedule),
            window_hours=int(window),
            accuracy_floor=None if floor is None else float(floor),
            actions=tuple(dict.fromkeys(actions)),
            enabled=bool(enabled),
            retrain_dataset=dataset,
            canary=canary,
            cooldown_minutes=int(cooldown),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "thresholds": self.thresholds.to_dict(),
            "scheduleMinutes": self.schedule_minutes,
            "windowHours": self.window_hours,
            "accuracyFloor": self.accuracy_floor,
            "actions": list(self.actions),
            "enabled": self.enabled,
            "retrain": None if self.retrain_dataset is None else {"datasetId": self.retrain_dataset},
            "canary": None if self.canary is None else self.canary.to_json(),
            "cooldownMinutes": self.cooldown_minutes,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MonitoringPolicy:
        """A stored policy (written by ``to_json``)."""
        return cls.parse(data)


def _retrain(raw: Any, needed: bool, where: str, errors: list[FieldError]) -> str | None:
    """``retrain.datasetId``: required when ``retrain`` is an action (its existence is the use case's
    check: it is the tenant's)."""
    if raw is None:
        if needed:
            errors.append(FieldError(f"{where}.datasetId", "is required when actions list retrain"))
        return None
    if not isinstance(raw, Mapping):
        errors.append(FieldError(where, "must be an object"))
        return None
    errors.extend(FieldError(f"{where}.{k}", "unknown field") for k in raw if k not in _RETRAIN_FIELDS)
    dataset = raw.get("datasetId")
    if not isinstance(dataset, str) or not dataset.strip():
        errors.append(FieldError(f"{where}.datasetId", "must name an uploaded dataset"))
        return None
    return dataset.removeprefix("dataset://")


def _canary(raw: Any, where: str, errors: list[FieldError]) -> CanaryPlan | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        errors.append(FieldError(where, "must be an object"))
        return None
    try:
        return CanaryPlan.parse(raw, where)
    except InvalidInput as exc:
        errors.extend(exc.errors or [FieldError(where, exc.detail)])
        return None


def _thresholds(raw: Any, where: str, errors: list[FieldError]) -> DriftThresholds | None:
    if not isinstance(raw, Mapping):
        errors.append(FieldError(where, "must be an object"))
        return None
    bad = len(errors)
    for name, value in raw.items():
        spec = _THRESHOLD_FIELDS.get(name)
        if spec is None:
            errors.append(FieldError(f"{where}.{name}", "unknown field"))
            continue
        kind, low, high, closed_low = spec
        if kind is int:
            ok = _whole(value, int(low), int(high))
        else:
            ok = _number(value, low, high) and (closed_low or value > low) and (name != "pValue" or value < 1)
        if not ok:
            errors.append(FieldError(f"{where}.{name}", _bounds(name, low, high, closed_low)))
    if len(errors) > bad:
        return None
    try:
        return DriftThresholds.from_dict(raw)
    except InvalidInput as exc:
        errors.append(FieldError(where, exc.detail))
        return None


def _bounds(name: str, low: float, high: float, closed_low: bool) -> str:
    if name == "minWindow":
        return f"must be a whole number, {int(low)}-{int(high)}"
    if name == "pValue":
        return "must be a number in (0, 1)"
    opening = "[" if closed_low else "("
    upper = "" if math.isinf(high) else f", {high:g}]"
    return f"must be a number in {opening}{low:g}{upper}" if upper else f"must be a number > {low:g}"


def _whole(value: Any, low: int, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _number(value: Any, low: float, high: float) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and low <= value <= high
    )
