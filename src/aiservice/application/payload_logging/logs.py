"""Payload logging use cases: a model's logging policy, its logged predictions, feedback on them,
erasure and retention.

Permissions: the policy is read with ``model:read`` and changed with ``model:write``; logged payloads
(inputs may be personal data) are read with ``prediction:read``; feedback is sent with
``model:predict`` (whoever may ask for a prediction may say how it turned out); a model's logs are
erased with ``model:write``. Every change commits through a unit of work, so it is audited.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from aiservice.application.audit import note_changes
from aiservice.application.payload_logging.ports import (
    PayloadLogStore,
    PayloadLogUnitOfWork,
    PayloadLogUnitOfWorkFactory,
    PredictionQuery,
)
from aiservice.application.ports import Clock
from aiservice.application.registry import find_model
from aiservice.domain.errors import FieldError, InvalidInput, NotFound
from aiservice.domain.models import Model
from aiservice.domain.pagination import Page
from aiservice.domain.payload_logging import (
    MAX_FEEDBACK_ITEMS,
    Feedback,
    FeedbackInput,
    LoggedPrediction,
    LoggingPolicy,
)
from aiservice.domain.tenancy import Permission, Principal

log = logging.getLogger(__name__)

MAX_WINDOW = 100_000

PolicyListener = Callable[[str, str, LoggingPolicy | None], None]


@dataclass(frozen=True)
class FeedbackOutcome:
    """One item of a batch: its feedback as stored, or ``missing`` when no such prediction was logged."""

    request_id: str
    feedback: Feedback | None

    @property
    def missing(self) -> bool:
        return self.feedback is None


class PayloadLogs:
    def __init__(
        self,
        uow: PayloadLogUnitOfWorkFactory,
        store: PayloadLogStore,
        clock: Clock,
        on_policy: PolicyListener = lambda tenant, model, policy: None,
    ) -> None:
        self._uow = uow
        self._store = store
        self._clock = clock
        self._on_policy = on_policy  # this process's recorder follows a change at once

    # -- the policy ------------------------------------------------------------------------------

    def policy(self, principal: Principal, model_ident: str) -> tuple[Model, LoggingPolicy]:
        principal.require(Permission.MODEL_READ)
        with self._uow(principal.tenant_id, writes=False) as uow:
            model = find_model(uow, model_ident, principal)
            return model, uow.payload_logs.policy(model.id) or LoggingPolicy()

    def set_policy(
        self, principal: Principal, model_ident: str, raw: Mapping[str, Any]
    ) -> tuple[Model, LoggingPolicy]:
        principal.require(Permission.MODEL_WRITE)
        policy = LoggingPolicy.parse(raw)
        with self._uow(principal.tenant_id) as uow:
            model = find_model(uow, model_ident, principal)
            before = uow.payload_logs.policy(model.id) or LoggingPolicy()
            uow.payload_logs.set_policy(model.id, policy, self._clock(), principal.subject)
            note_changes(before.to_json(), policy.to_json())
            uow.commit()
        self._on_policy(principal.tenant_id, model.id, policy)
        return model, policy

    # -- reading ---------------------------------------------------------------------------------

    def predictions(
        self, principal: Principal, model_ident: str, query: PredictionQuery
    ) -> Page[LoggedPrediction]:
        principal.require(Permission.PREDICTION_READ)
        with self._uow(principal.tenant_id, writes=False) as uow:
            model = find_model(uow, model_ident, principal)
            return uow.payload_logs.page(model.id, query)

    def get(self, principal: Principal, request_id: str) -> LoggedPrediction:
        principal.require(Permission.PREDICTION_READ)
        with self._uow(principal.tenant_id, writes=False) as uow:
            return _logged(uow, principal, [request_id], payloads=True)[request_id]

    def window(
        self,
        principal: Principal,
        model_ident: str,
        version: int | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 10_000,
    ) -> list[LoggedPrediction]:
        """The logged inputs and outputs (with feedback) of a model, or one version of it, in
        ``[since, until)``, oldest first: what drift and performance monitoring compare."""
        principal.require(Permission.PREDICTION_READ)
        with self._uow(principal.tenant_id, writes=False) as uow:
            model = find_model(uow, model_ident, principal)
            return uow.payload_logs.window(model.id, version, since, until, min(limit, MAX_WINDOW))

    # -- feedback --------------------------------------------------------------------------------

    def feedback(self, principal: Principal, request_id: str, raw: Mapping[str, Any]) -> Feedback:
        """Stores feedback on one logged prediction; the latest feedback replaces an earlier one."""
        principal.require(Permission.PREDICT)
        given = FeedbackInput.parse(request_id, raw)
        with self._uow(principal.tenant_id) as uow:
            logged = _logged(uow, principal, [request_id], payloads=False)[request_id]
            stored = self._store_feedback(uow, principal, given, logged)
            uow.commit()
        return stored

    def feedback_many(self, principal: Principal, items: Sequence[Any]) -> list[FeedbackOutcome]:
        """Feedback on many predictions at once. Every item is checked before anything is written (an
        invalid one fails the whole batch); an item naming no logged prediction is reported as
        missing, and the others are stored, in one transaction."""
        principal.require(Permission.PREDICT)
        if not 1 <= len(items) <= MAX_FEEDBACK_ITEMS:
            raise InvalidInput(
                f"Send 1 to {MAX_FEEDBACK_ITEMS} feedback items at a time, not {len(items)}.",
                errors=[FieldError("body.items", f"must hold 1-{MAX_FEEDBACK_ITEMS} items")],
            )
        given = _parse_items(items)
        with self._uow(principal.tenant_id) as uow:
            logged = uow.payload_logs.latest(sorted({g.request_id for g in given}), payloads=False)
            outcomes = []
            for item in given:
                found = logged.get(item.request_id)
                if found is None or not principal.sees_model(found.model_id):
                    outcomes.append(FeedbackOutcome(item.request_id, None))
                    continue
                outcomes.append(
                    FeedbackOutcome(item.request_id, self._store_feedback(uow, principal, item, found))
                )
            stored = sum(1 for o in outcomes if not o.missing)
            if stored:
                note_changes({}, {"feedback": stored})
                uow.commit()
        return outcomes

    def _store_feedback(
        self, uow: PayloadLogUnitOfWork, principal: Principal, given: FeedbackInput, logged: LoggedPrediction
    ) -> Feedback:
        feedback = Feedback(
            request_id=logged.request_id,
            model_id=logged.model_id,
            label=given.label,
            has_label=given.has_label,
            reward=given.reward,
            created_at=self._clock(),
            created_by=principal.subject,
        )
        uow.payload_logs.put_feedback(feedback)
        return feedback

    # -- erasure and retention -------------------------------------------------------------------

    def erase(self, principal: Principal, model_ident: str) -> dict[str, int]:
        """Deletes every logged prediction of a model and the feedback on them; the policy stays."""
        principal.require(Permission.MODEL_WRITE)
        with self._uow(principal.tenant_id) as uow:
            model = find_model(uow, model_ident, principal)
            counts = uow.payload_logs.erase_model(model.id)
            note_changes({}, {"erased": counts})
            uow.commit()
        self._drop_files(principal.tenant_id, model.id)
        return counts

    def forget_model(self, tenant_id: str, model_id: str) -> None:
        """A model was deleted: its policy, logs and feedback go with it."""
        self._on_policy(tenant_id, model_id, None)
        with self._uow(tenant_id) as uow:
            uow.payload_logs.erase_model(model_id, policy=True)
            uow.commit()
        self._drop_files(tenant_id, model_id)

    def _drop_files(self, tenant_id: str, model_id: str) -> None:
        """The model's Parquet files none of whose rows remain, after the commit; what fails here is
        left to the next purge."""
        try:
            self._store.drop_files(tenant_id, model_id)
        except Exception:
            log.warning("payload log: files of model %s left to the next purge", model_id, exc_info=True)

    def purge(self) -> int:
        """Deletes the logs past their model's retention (and those of deleted models); the count."""
        return self._store.purge(self._clock())


def cutoff(now: datetime, policy: LoggingPolicy) -> datetime:
    return now - timedelta(days=policy.retention_days)


def _logged(
    uow: PayloadLogUnitOfWork, principal: Principal, request_ids: Sequence[str], *, payloads: bool
) -> dict[str, LoggedPrediction]:
    found = uow.payload_logs.latest(request_ids, payloads=payloads)
    for request_id in request_ids:
        logged = found.get(request_id)
        if logged is None or not principal.sees_model(logged.model_id):
            raise NotFound(
                f"No prediction was logged under request id {request_id[:160]!r}.",
                extra={"requestId": request_id[:160]},
            )
    return found


def _parse_items(items: Sequence[Any]) -> list[FeedbackInput]:
    parsed: list[FeedbackInput] = []
    errors: list[FieldError] = []
    for i, item in enumerate(items):
        where = f"body.items.{i}"
        if not isinstance(item, Mapping):
            errors.append(FieldError(where, "must be an object"))
            continue
        try:
            parsed.append(FeedbackInput.parse(item.get("requestId"), dict(item), where=where))
        except InvalidInput as exc:
            errors.extend(exc.errors)
    if errors:
        fields = ", ".join(e.field for e in errors[:5])
        raise InvalidInput(f"Invalid feedback items (nothing was stored): {fields}.", errors=errors)
    return parsed
