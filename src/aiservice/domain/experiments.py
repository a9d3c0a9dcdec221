"""Experiments: live comparisons of a model's versions (A/B, canary, shadow, bandit) and sticky routing.

An experiment splits one model's (or deployment's) traffic between *arms*, each a version number or an
alias with a weight. One arm is the *champion* (what serves without the experiment); the others are
challengers. The mode says how traffic moves:

- ``ab``: fixed weights;
- ``canary``: one challenger whose share follows ``CanaryPlan.steps`` while its guards hold;
- ``shadow``: the champion answers every request, each challenger gets a copy off the caller's path;
- ``bandit``: shares follow an allocation the statistics layer recomputes from rewards.

Assignment is sticky: a routing key (a header or an input field) always lands on the same arm, by
weighted rendezvous hashing (see ``Assigner``). Field names in errors follow the HTTP body's camelCase
(``body.arms.1.weight``), as the rest of the domain does.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from functools import lru_cache
from typing import Any
from uuid import uuid4

from aiservice.domain.errors import Conflict, FieldError, InvalidInput

MAX_ARMS = 10
EXPERIMENT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]{0,127}$")
# An HTTP header name (RFC 9110 token) or an input field name.
HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,128}$")
INPUT_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$")
DEFAULT_CANARY_STEPS = (0.05, 0.25, 0.5, 1.0)


class ExperimentMode(StrEnum):
    AB = "ab"
    CANARY = "canary"
    SHADOW = "shadow"
    BANDIT = "bandit"


class ExperimentStatus(StrEnum):
    DRAFT = "draft"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPED = "stopped"  # ended without a winner (or rolled back)
    COMPLETED = "completed"  # ended with a winner


class BanditAlgorithm(StrEnum):
    THOMPSON = "thompson"
    UCB = "ucb"


class RewardKind(StrEnum):
    BINARY = "binary"  # a success or not: accuracy, conversion
    CONTINUOUS = "continuous"  # a number: reward, (negated) error


class KeySource(StrEnum):
    HEADER = "header"
    INPUT = "input"


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _invalid(errors: list[FieldError], what: str) -> InvalidInput:
    return InvalidInput(
        f"Invalid {what}: " + "; ".join(f"{e.field} {e.message}" for e in errors), errors=errors
    )


@dataclass(frozen=True)
class Arm:
    """One side of the comparison: a version number or an alias (``champion``, ``production``)."""

    name: str
    reference: int | str
    weight: float = 1.0

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "reference": self.reference, "weight": self.weight}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Arm:
        return cls(str(data["name"]), data["reference"], float(data.get("weight", 1.0)))


@dataclass(frozen=True)
class RoutingKeySpec:
    """Where a request's routing key is read: a header (``X-User-Id``) or a field of the input."""

    source: KeySource
    name: str

    def check(self, where: str = "body.routingKey") -> RoutingKeySpec:
        shape = HEADER_NAME if self.source == KeySource.HEADER else INPUT_FIELD
        if not shape.fullmatch(self.name):
            raise _invalid([FieldError(f"{where}.{self.source.value}", "invalid name")], "routing key")
        return self

    @classmethod
    def parse(cls, raw: Mapping[str, Any], where: str = "body.routingKey") -> RoutingKeySpec:
        """``{"header": "X-User-Id"}`` or ``{"input": "user_id"}``: exactly one of the two."""
        given = [s for s in KeySource if raw.get(s.value) is not None]
        unknown = [k for k in raw if k not in {s.value for s in KeySource}]
        if len(given) != 1 or unknown or not isinstance(raw[given[0].value], str):
            raise _invalid(
                [FieldError(where, "give exactly one of header or input, as a string")], "routing key"
            )
        return cls(given[0], raw[given[0].value]).check(where)

    def to_json(self) -> dict[str, Any]:
        return {self.source.value: self.name}


@dataclass(frozen=True)
class CanaryPlan:
    """The challenger's shares, one per step, and the guards that must hold before each next step.

    A step advances only after ``min_requests`` challenger requests and ``min_seconds``; a broken guard
    (error rate, p95 latency relative to the champion, optionally a metric drop) rolls the canary back.
    """

    steps: tuple[float, ...] = DEFAULT_CANARY_STEPS
    min_requests: int = 500
    min_seconds: float = 300.0
    max_error_rate: float = 0.05
    max_latency_ratio: float = 1.5
    max_metric_drop: float | None = None  # absolute drop of the outcome metric allowed vs the champion

    def check(self, where: str = "body.canary") -> CanaryPlan:
        errors: list[FieldError] = []
        steps = self.steps
        if not steps or not all(_number(s) and 0 < s <= 1 for s in steps):
            errors.append(FieldError(f"{where}.steps", "must be one or more shares in (0, 1]"))
        elif any(b <= a for a, b in itertools.pairwise(steps)):
            errors.append(FieldError(f"{where}.steps", "must rise strictly"))
        if (
            isinstance(self.min_requests, bool)
            or not isinstance(self.min_requests, int)
            or self.min_requests < 1
        ):
            errors.append(FieldError(f"{where}.minRequests", "must be an integer of at least 1"))
        if not _number(self.min_seconds) or self.min_seconds < 0:
            errors.append(FieldError(f"{where}.minSeconds", "must be a number of seconds, 0 or more"))
        if not _number(self.max_error_rate) or not 0 <= self.max_error_rate <= 1:
            errors.append(FieldError(f"{where}.maxErrorRate", "must be a rate from 0 to 1"))
        if not _number(self.max_latency_ratio) or self.max_latency_ratio < 1:
            errors.append(FieldError(f"{where}.maxLatencyRatio", "must be a ratio of at least 1"))
        if self.max_metric_drop is not None and (
            not _number(self.max_metric_drop) or self.max_metric_drop < 0
        ):
            errors.append(FieldError(f"{where}.maxMetricDrop", "must be a number, 0 or more"))
        if errors:
            raise _invalid(errors, "canary plan")
        return self

    @classmethod
    def parse(cls, raw: Mapping[str, Any] | None, where: str = "body.canary") -> CanaryPlan:
        values = _fields(raw, CANARY_FIELDS, where, "canary plan")
        steps = values.get("steps", DEFAULT_CANARY_STEPS)
        if not isinstance(steps, list | tuple):
            raise _invalid([FieldError(f"{where}.steps", "must be a list of shares")], "canary plan")
        return cls(**{**values, "steps": tuple(steps)}).check(where)

    def to_json(self) -> dict[str, Any]:
        return {key: getattr(self, name) for key, name in CANARY_FIELDS.items()} | {"steps": list(self.steps)}


CANARY_FIELDS = {
    "steps": "steps",
    "minRequests": "min_requests",
    "minSeconds": "min_seconds",
    "maxErrorRate": "max_error_rate",
    "maxLatencyRatio": "max_latency_ratio",
    "maxMetricDrop": "max_metric_drop",
}
BANDIT_FIELDS = {
    "algorithm": "algorithm",
    "rewardMetric": "reward_metric",
    "rewardKind": "reward_kind",
    "minExploration": "min_exploration",
}


def _fields(raw: Mapping[str, Any] | None, names: Mapping[str, str], where: str, what: str) -> dict[str, Any]:
    """The body's camelCase keys as constructor arguments; unknown keys are errors."""
    raw = raw or {}
    unknown = [FieldError(f"{where}.{k}", f"unknown; known: {sorted(names)}") for k in raw if k not in names]
    if unknown:
        raise _invalid(unknown, what)
    return {names[k]: v for k, v in raw.items()}


@dataclass(frozen=True)
class BanditPlan:
    """How a bandit learns: the algorithm, the reward it maximises, and the share every arm keeps."""

    algorithm: BanditAlgorithm = BanditAlgorithm.THOMPSON
    reward_metric: str = "reward"
    reward_kind: RewardKind = RewardKind.BINARY
    min_exploration: float = 0.05  # the floor of each arm's share, so no arm starves of evidence

    def check(self, arms: int, where: str = "body.bandit") -> BanditPlan:
        errors: list[FieldError] = []
        if not self.reward_metric or len(self.reward_metric) > 64:
            errors.append(FieldError(f"{where}.rewardMetric", "must be 1-64 characters"))
        if not _number(self.min_exploration) or not 0 <= self.min_exploration <= 1 / arms:
            errors.append(FieldError(f"{where}.minExploration", f"must be from 0 to 1/arms ({1 / arms:.3g})"))
        if errors:
            raise _invalid(errors, "bandit plan")
        return self

    @classmethod
    def parse(cls, raw: Mapping[str, Any] | None, arms: int, where: str = "body.bandit") -> BanditPlan:
        values = _fields(raw, BANDIT_FIELDS, where, "bandit plan")
        for key, kind in (("algorithm", BanditAlgorithm), ("reward_kind", RewardKind)):
            if key in values:
                try:
                    values[key] = kind(values[key])
                except ValueError:
                    known = [k.value for k in kind]
                    camel = "rewardKind" if key == "reward_kind" else key
                    raise _invalid(
                        [FieldError(f"{where}.{camel}", f"must be one of {known}")], "bandit plan"
                    ) from None
        return cls(**values).check(arms, where)

    def to_json(self) -> dict[str, Any]:
        return {key: getattr(self, name) for key, name in BANDIT_FIELDS.items()}


class Assigner:
    """Sticky, weighted assignment of routing keys to arms by rendezvous (highest random weight) hashing.

    Each arm scores a key ``-weight / ln(u)`` with ``u`` uniform in (0, 1) from blake2b of (experiment,
    arm, key); the highest score wins. So an arm wins with probability ``weight / sum(weights)``, one key
    always lands on one arm, and a weight change moves only the keys it must (raising B from 40 to 50
    percent moves 10 percent of the keys, all towards B). Build one per experiment and weights: it
    keeps the per-arm hash keys, so ``assign`` costs one short hash per arm.
    """

    __slots__ = ("_arms", "_cumulative", "_scored")

    def __init__(self, experiment_id: str, arms: Sequence[Arm], weights: Mapping[str, float] | None = None):
        chosen = [(arm, float(arm.weight if weights is None else weights.get(arm.name, 0.0))) for arm in arms]
        live = [(arm, w) for arm, w in chosen if w > 0 and math.isfinite(w)]
        if not live:
            raise InvalidInput(
                "An experiment needs at least one arm with a weight above 0.",
                errors=[FieldError("body.arms", "every weight is 0")],
            )
        self._arms = tuple(arm for arm, _ in live)
        self._scored = tuple(
            (
                arm,
                w,
                hashlib.blake2b(f"{experiment_id}\x00{arm.name}".encode(), digest_size=32).digest(),
            )
            for arm, w in live
        )
        total, running = sum(w for _, w in live), 0.0
        cumulative = []
        for _, w in live:
            running += w / total
            cumulative.append(running)
        self._cumulative = tuple(cumulative)

    def assign(self, routing_key: str | None) -> Arm:
        """The arm for ``routing_key``; without one, a weighted random arm (no stickiness to keep)."""
        if routing_key is None:
            draw = random.random()
            for arm, edge in zip(self._arms, self._cumulative, strict=True):
                if draw < edge:
                    return arm
            return self._arms[-1]
        key = routing_key.encode()
        best, best_score = self._arms[0], -1.0
        for arm, weight, salt in self._scored:
            digest = hashlib.blake2b(key, digest_size=8, key=salt).digest()
            u = ((int.from_bytes(digest, "big") >> 11) + 0.5) / 9007199254740992.0  # 2**53: u in (0, 1)
            score = -weight / math.log(u)
            if score > best_score:
                best, best_score = arm, score
        return best


@lru_cache(maxsize=1024)
def _assigner(experiment_id: str, arms: tuple[Arm, ...]) -> Assigner:
    return Assigner(experiment_id, arms)


def assign(experiment_id: str, routing_key: str | None, arms: Sequence[Arm]) -> Arm:
    """The arm of ``routing_key`` by the arms' own weights (cached per experiment and arms)."""
    return _assigner(experiment_id, tuple(arms)).assign(routing_key)


@dataclass
class Experiment:
    tenant_id: str
    name: str
    model_id: str
    mode: ExperimentMode
    arms: tuple[Arm, ...]
    champion: str
    created_at: datetime
    updated_at: datetime
    id: str = field(default_factory=lambda: str(uuid4()))
    deployment: str | None = None
    routing_key: RoutingKeySpec | None = None
    status: ExperimentStatus = ExperimentStatus.DRAFT
    confidence: float = 0.95
    min_detectable_effect: float = 0.01  # absolute, in the metric's units (0.01: one percentage point)
    auto_promote: bool = False
    canary: CanaryPlan | None = None
    bandit: BanditPlan | None = None
    canary_step: int = 0
    step_started_at: datetime | None = None
    allocation: dict[str, float] = field(default_factory=dict)  # a bandit's current shares
    started_at: datetime | None = None
    ended_at: datetime | None = None
    winner: str | None = None
    reason: str = ""
    created_by: str | None = None

    @classmethod
    def create(
        cls,
        *,
        tenant_id: str,
        name: str,
        model_id: str,
        mode: ExperimentMode,
        arms: Sequence[Arm],
        now: datetime,
        champion: str | None = None,
        deployment: str | None = None,
        routing_key: RoutingKeySpec | None = None,
        confidence: float = 0.95,
        min_detectable_effect: float = 0.01,
        auto_promote: bool = False,
        canary: CanaryPlan | None = None,
        bandit: BanditPlan | None = None,
        created_by: str | None = None,
    ) -> Experiment:
        """A draft experiment; every invalid field is reported at once, named as in the HTTP body."""
        errors: list[FieldError] = []
        if not isinstance(name, str) or not EXPERIMENT_NAME.fullmatch(name):
            errors.append(FieldError("body.name", "must be 1-128 letters, digits, ' ', '.', '_' or '-'"))
        errors += check_arms(arms)
        champion = arms[0].name if champion is None and arms else champion
        if champion not in {arm.name for arm in arms}:
            errors.append(FieldError("body.champion", "must name one of the arms"))
        if mode == ExperimentMode.CANARY and len(arms) != 2:
            errors.append(FieldError("body.arms", "a canary has exactly two arms: champion and challenger"))
        if not _number(confidence) or not 0.5 <= confidence < 1:
            errors.append(FieldError("body.confidence", "must be from 0.5 to below 1 (0.95: 95%)"))
        if not _number(min_detectable_effect) or min_detectable_effect <= 0:
            errors.append(FieldError("body.minDetectableEffect", "must be a number above 0"))
        if mode != ExperimentMode.CANARY and canary is not None:
            errors.append(FieldError("body.canary", "only a canary experiment takes a canary plan"))
        if mode != ExperimentMode.BANDIT and bandit is not None:
            errors.append(FieldError("body.bandit", "only a bandit experiment takes a bandit plan"))
        if mode == ExperimentMode.SHADOW and auto_promote:
            errors.append(FieldError("body.autoPromote", "a shadow experiment records, it does not promote"))
        if errors:
            raise _invalid(errors, "experiment")
        assert champion is not None
        if mode == ExperimentMode.CANARY:
            canary = (canary or CanaryPlan()).check()
        if mode == ExperimentMode.BANDIT:
            bandit = (bandit or BanditPlan()).check(len(arms))
        return cls(
            tenant_id=tenant_id,
            name=name,
            model_id=model_id,
            mode=mode,
            arms=tuple(arms),
            champion=champion,
            created_at=now,
            updated_at=now,
            deployment=deployment,
            routing_key=routing_key.check() if routing_key else None,
            confidence=float(confidence),
            min_detectable_effect=float(min_detectable_effect),
            auto_promote=auto_promote,
            canary=canary,
            bandit=bandit,
            created_by=created_by,
        )

    # -- traffic -----------------------------------------------------------------------------------

    @property
    def challengers(self) -> tuple[Arm, ...]:
        return tuple(arm for arm in self.arms if arm.name != self.champion)

    @property
    def champion_arm(self) -> Arm:
        return next(arm for arm in self.arms if arm.name == self.champion)

    @property
    def canary_share(self) -> float:
        """The challenger's share now (0 unless a canary runs or is paused at a step)."""
        if self.canary is None or self.status not in (ExperimentStatus.RUNNING, ExperimentStatus.PAUSED):
            return 0.0
        return self.canary.steps[self.canary_step]

    def weights(self) -> dict[str, float]:
        """Who answers, by share: a canary's step, a bandit's allocation, the champion alone in shadow."""
        if self.mode == ExperimentMode.CANARY:
            share = self.canary_share
            return {self.champion: 1.0 - share, self.challengers[0].name: share}
        if self.mode == ExperimentMode.SHADOW:
            return {self.champion: 1.0}
        if self.mode == ExperimentMode.BANDIT and self.allocation:
            return dict(self.allocation)
        return {arm.name: arm.weight for arm in self.arms}

    def assigner(self) -> Assigner:
        """Build once per change of weights (start, step, allocation) and keep for the hot path."""
        return Assigner(self.id, self.arms, self.weights())

    def shadow_arms(self) -> tuple[Arm, ...]:
        """The arms that get a copy of each request without answering it."""
        return self.challengers if self.mode == ExperimentMode.SHADOW else ()

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self, now: datetime) -> None:
        self._require({ExperimentStatus.DRAFT}, "start")
        self.status, self.started_at, self.step_started_at, self.updated_at = (
            ExperimentStatus.RUNNING,
            now,
            now,
            now,
        )

    def pause(self, now: datetime) -> None:
        self._require({ExperimentStatus.RUNNING}, "pause")
        self.status, self.updated_at = ExperimentStatus.PAUSED, now

    def resume(self, now: datetime) -> None:
        self._require({ExperimentStatus.PAUSED}, "resume")
        self.status, self.updated_at = ExperimentStatus.RUNNING, now

    def stop(self, now: datetime, reason: str = "") -> None:
        """End without a winner; the champion serves alone again."""
        self._require({ExperimentStatus.DRAFT, ExperimentStatus.RUNNING, ExperimentStatus.PAUSED}, "stop")
        self.status, self.ended_at, self.updated_at, self.reason = ExperimentStatus.STOPPED, now, now, reason

    def complete(self, winner: str, now: datetime, reason: str = "") -> None:
        """End with ``winner``, whose promotion (alias, stage) is the application's job."""
        self._require(
            {ExperimentStatus.RUNNING, ExperimentStatus.PAUSED, ExperimentStatus.STOPPED}, "complete"
        )
        if winner not in {arm.name for arm in self.arms}:
            raise InvalidInput(
                f"{winner!r} is not an arm of experiment {self.name!r}.",
                errors=[FieldError("body.winner", "must name one of the arms")],
                extra={"experiment": self.id},
            )
        self.status, self.winner, self.reason = ExperimentStatus.COMPLETED, winner, reason
        self.ended_at = self.updated_at = now

    def advance_canary(self, now: datetime) -> bool:
        """Move the challenger to the next step's share; False when it already takes the last one."""
        self._require({ExperimentStatus.RUNNING}, "advance")
        if self.canary is None:
            raise Conflict(f"Experiment {self.name!r} is not a canary.", extra={"experiment": self.id})
        if self.canary_step + 1 >= len(self.canary.steps):
            return False
        self.canary_step += 1
        self.step_started_at = self.updated_at = now
        return True

    def roll_back(self, now: datetime, reason: str) -> None:
        """A canary guard broke: the challenger gets no more traffic and the experiment stops."""
        self.stop(now, f"rolled back: {reason}")

    def set_allocation(self, allocation: Mapping[str, float], now: datetime) -> None:
        """A bandit's new shares (one per arm, summing to 1), as the statistics layer computed them."""
        if self.mode != ExperimentMode.BANDIT:
            raise Conflict(f"Experiment {self.name!r} is not a bandit.", extra={"experiment": self.id})
        names = {arm.name for arm in self.arms}
        shares = list(allocation.values())
        if set(allocation) != names or not all(_number(s) and s >= 0 for s in shares):
            raise InvalidInput(
                "An allocation gives every arm a share of 0 or more.",
                errors=[FieldError("allocation", f"must have one share per arm: {sorted(names)}")],
            )
        if not math.isclose(sum(shares), 1.0, abs_tol=1e-6):
            raise InvalidInput(
                "An allocation's shares sum to 1.", errors=[FieldError("allocation", "must sum to 1")]
            )
        self.allocation, self.updated_at = dict(allocation), now

    @property
    def active(self) -> bool:
        """Whether predictions are routed by this experiment now."""
        return self.status == ExperimentStatus.RUNNING

    def _require(self, allowed: set[ExperimentStatus], action: str) -> None:
        if self.status not in allowed:
            raise Conflict(
                f"Cannot {action} experiment {self.name!r}: it is {self.status.value}.",
                code="experiment-state",
                extra={"experiment": self.id, "status": self.status.value, "action": action},
            )

    def to_json(self) -> dict[str, Any]:
        def at(moment: datetime | None) -> str | None:
            return None if moment is None else moment.isoformat()

        return {
            "id": self.id,
            "name": self.name,
            "modelId": self.model_id,
            "deployment": self.deployment,
            "mode": self.mode.value,
            "arms": [arm.to_json() for arm in self.arms],
            "champion": self.champion,
            "routingKey": None if self.routing_key is None else self.routing_key.to_json(),
            "status": self.status.value,
            "confidence": self.confidence,
            "minDetectableEffect": self.min_detectable_effect,
            "autoPromote": self.auto_promote,
            "canary": None if self.canary is None else self.canary.to_json(),
            "canaryStep": self.canary_step if self.canary else None,
            "bandit": None if self.bandit is None else self.bandit.to_json(),
            "weights": self.weights(),
            "createdAt": at(self.created_at),
            "startedAt": at(self.started_at),
            "endedAt": at(self.ended_at),
            "winner": self.winner,
            "reason": self.reason,
        }


def check_arms(arms: Sequence[Arm], where: str = "body.arms") -> list[FieldError]:
    """What is wrong with ``arms``: too few or many, duplicates, bad weights (empty when fine)."""
    errors: list[FieldError] = []
    if not 2 <= len(arms) <= MAX_ARMS:
        return [FieldError(where, f"must list 2 to {MAX_ARMS} arms")]
    names: set[str] = set()
    references: set[int | str] = set()
    for index, arm in enumerate(arms):
        if not isinstance(arm.name, str) or not 1 <= len(arm.name) <= 64:
            errors.append(FieldError(f"{where}.{index}.name", "must be 1-64 characters"))
        elif arm.name in names:
            errors.append(FieldError(f"{where}.{index}.name", f"duplicates arm {arm.name!r}"))
        names.add(arm.name)
        reference: int | str = arm.reference
        if isinstance(reference, str) and reference.isascii() and reference.isdigit():
            reference = int(reference)  # "3" and 3 name the same version
        if isinstance(reference, bool) or not isinstance(reference, int | str) or reference in ("", 0):
            errors.append(FieldError(f"{where}.{index}.reference", "must be a version number or an alias"))
        elif isinstance(reference, int) and reference < 1:
            errors.append(FieldError(f"{where}.{index}.reference", "a version number is 1 or more"))
        elif reference in references:
            errors.append(
                FieldError(f"{where}.{index}.reference", f"another arm already serves {reference!r}")
            )
        else:
            references.add(reference)
        if not _number(arm.weight) or arm.weight < 0:
            errors.append(FieldError(f"{where}.{index}.weight", "must be a number, 0 or more"))
    if not errors and sum(arm.weight for arm in arms) <= 0:
        errors.append(FieldError(where, "the weights must not all be 0"))
    return errors
