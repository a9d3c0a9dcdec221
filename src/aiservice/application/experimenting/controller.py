"""The experiment controller: a periodic look at every running experiment (in the host worker).

- a canary: ``evaluate_canary`` on the observations since its current step began; ``advance`` moves
  the challenger to the next share (or, at the last step, promotes it), ``rollback`` stops the
  experiment with the broken guard as its reason (the champion takes all traffic again);
- a bandit: the allocation is recomputed from the rewards (``allocate``) when it moved by more than
  ``MIN_SHIFT`` on some arm;
- ``autoPromote``: once the verdict names a winner, it is promoted and the experiment completes.

Every automatic step is one audited change (by ``SYSTEM_SUBJECT``, with its reason) and an event.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aiservice.application.audit import (
    CallContext,
    CallDescription,
    CallKind,
    begin_call,
    end_call,
    note_changes,
)
from aiservice.application.experimenting.bandits import allocate
from aiservice.application.experimenting.canary import CanaryAction, evaluate_canary
from aiservice.application.experimenting.experiments import RESULT_ROWS, Experiments
from aiservice.application.experimenting.ports import (
    ExperimentDirectory,
    ExperimentUnitOfWorkFactory,
    ObservedRow,
)
from aiservice.application.experimenting.results import judge, summarize
from aiservice.application.ports import Clock
from aiservice.application.registry import find_model
from aiservice.domain.audit import Resource
from aiservice.domain.errors import NotFound
from aiservice.domain.events import ExperimentRolledBack, ExperimentStopped, ExperimentTrafficShifted
from aiservice.domain.experiments import Experiment, ExperimentMode
from aiservice.domain.tenancy import Principal, Role

log = logging.getLogger(__name__)

SYSTEM_SUBJECT = "system:experiment-controller"
MIN_SHIFT = 0.01
INTERVAL_S = 10.0


def system_principal(tenant_id: str) -> Principal:
    return Principal(SYSTEM_SUBJECT, tenant_id, frozenset({Role.ADMIN}))


@contextmanager
def automatic(experiment: Experiment, action: str) -> Iterator[None]:
    """The audit context of an automatic step: the controller is the caller."""
    call = CallContext(
        describe=lambda: CallDescription(
            action, CallKind.CHANGE, Resource("experiment", experiment.id, experiment.name)
        ),
        principal=system_principal(experiment.tenant_id),
    )
    token = begin_call(call)
    try:
        yield
    finally:
        end_call(token)


class ExperimentController:
    def __init__(
        self,
        directory: ExperimentDirectory,
        uow: ExperimentUnitOfWorkFactory,
        experiments: Experiments,
        clock: Clock,
        seed: int | None = None,
    ) -> None:
        self._directory = directory
        self._uow = uow
        self._experiments = experiments
        self._clock = clock
        self._seed = seed

    def tick(self) -> None:
        for experiment in self._directory.running():
            try:
                self.look(experiment)
            except Exception:  # one experiment's trouble is not every experiment's
                log.warning("experiment %s: controller look failed", experiment.id, exc_info=True)

    def look(self, experiment: Experiment) -> str | None:
        """One look at a running experiment; what was done (None: nothing)."""
        with self._uow(experiment.tenant_id, writes=False) as uow:
            rows = uow.experiments.observations(experiment.id, RESULT_ROWS)
            try:
                category = find_model(uow, experiment.model_id).category
            except NotFound:  # deleted while its experiment ran
                category, missing = None, True
            else:
                missing = False
        if missing:
            self._change(experiment, "experiment.stop", "the model was deleted", stop=True)
            return "stopped"
        if experiment.mode == ExperimentMode.CANARY:
            done = self._canary(experiment, rows, category)
            if done:
                return done
        if experiment.mode == ExperimentMode.BANDIT:
            self._bandit(experiment, rows, category)
        if experiment.auto_promote:
            _, higher, summaries, _, _ = summarize(experiment, rows, category)
            verdict = judge(experiment, summaries, higher, seed=self._seed)
            if verdict.winner is not None:
                with automatic(experiment, "experiment.promote"):
                    self._experiments.promote(
                        system_principal(experiment.tenant_id),
                        experiment.id,
                        verdict.winner,
                        reason=f"auto-promoted: {verdict.text} ({verdict.test})",
                    )
                return "promoted"
        return None

    def _canary(self, experiment: Experiment, rows: list[ObservedRow], category: str | None) -> str | None:
        assert experiment.canary is not None
        since = experiment.step_started_at
        window = [r for r in rows if since is None or r.created_at is None or r.created_at >= since]
        _, higher, summaries, _, _ = summarize(experiment, window, category)
        by_arm = {s.arm: s for s in summaries}
        challenger = experiment.challengers[0].name
        now = self._clock()
        step_seconds = (now - since).total_seconds() if since is not None else 0.0
        decision = evaluate_canary(
            by_arm[experiment.champion],
            by_arm[challenger],
            experiment.canary,
            step_seconds=step_seconds,
            confidence=experiment.confidence,
            higher_is_better=higher,
        )
        if decision.action == CanaryAction.ROLLBACK:
            self._change(experiment, "experiment.roll_back", decision.reason, rollback=True)
            return "rolled_back"
        if decision.action == CanaryAction.ADVANCE:
            if experiment.canary_step + 1 >= len(experiment.canary.steps):
                with automatic(experiment, "experiment.promote"):
                    self._experiments.promote(
                        system_principal(experiment.tenant_id),
                        experiment.id,
                        challenger,
                        reason=f"canary passed every step: {decision.reason}",
                    )
                return "promoted"
            self._change(experiment, "experiment.advance", decision.reason)
            return "advanced"
        return None

    def _bandit(self, experiment: Experiment, rows: list[ObservedRow], category: str | None) -> None:
        assert experiment.bandit is not None
        _, _, summaries, _, _ = summarize(experiment, rows, category)
        if all(s.outcome is None or s.outcome.n == 0 for s in summaries):
            return
        shares = allocate(summaries, experiment.bandit, seed=self._seed)
        current = experiment.weights()
        total = sum(current.values()) or 1.0
        if all(abs(shares[name] - current.get(name, 0.0) / total) < MIN_SHIFT for name in shares):
            return
        reason = "bandit allocation from rewards: " + ", ".join(
            f"{s.arm} {s.outcome.mean:.3f} over {s.outcome.n}" for s in summaries if s.outcome is not None
        )
        self._change(experiment, "experiment.allocate", reason, allocation=shares)

    def _change(
        self,
        seen: Experiment,
        action: str,
        reason: str,
        *,
        rollback: bool = False,
        stop: bool = False,
        allocation: dict[str, float] | None = None,
    ) -> None:
        with automatic(seen, action), self._uow(seen.tenant_id) as uow:
            experiment = uow.experiments.get(seen.id, for_update=True)
            if experiment is None or not experiment.active or experiment.updated_at != seen.updated_at:
                return  # changed meanwhile: the next look sees the new state
            now = self._clock()
            before: dict[str, Any] = {"status": experiment.status.value, "weights": experiment.weights()}
            event: Any
            if stop:
                experiment.stop(now, reason)
                event = ExperimentStopped(**_about(experiment), reason=reason)
            elif rollback:
                experiment.roll_back(now, reason)
                event = ExperimentRolledBack(
                    **_about(experiment), challenger=experiment.challengers[0].name, reason=reason
                )
            else:
                if allocation is not None:
                    experiment.set_allocation(allocation, now)
                else:
                    experiment.advance_canary(now)
                event = ExperimentTrafficShifted(
                    **_about(experiment), weights=experiment.weights(), reason=reason
                )
            note_changes(
                {**before, "reason": ""},
                {"status": experiment.status.value, "weights": experiment.weights(), "reason": reason},
            )
            uow.experiments.save(experiment)
            uow.record(event)
            uow.commit()
        self._experiments.on_change(experiment)


def _about(experiment: Experiment) -> dict[str, Any]:
    return {
        "tenant_id": experiment.tenant_id,
        "aggregate_id": experiment.id,
        "name": experiment.name,
        "model_id": experiment.model_id,
        "mode": experiment.mode.value,
    }
