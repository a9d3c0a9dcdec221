"""Operator requests that must reach every worker process of this host, not only the one that
accepted the connection: loading or freeing a model's memory, and each worker's state.

The answering worker acts first, with the caller's own checks (a refusal there is the caller's
answer); the siblings then act as the same principal and each says how it went, so a load that one
worker could not make room for is visible instead of silently uneven.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

from aiservice.application.artifact_keys import InFlightKeys
from aiservice.application.inference import InferenceService
from aiservice.application.ports import PeerAnswer, WorkerPeers
from aiservice.application.serving.inputs import ServingModel
from aiservice.domain.errors import DomainError
from aiservice.domain.tenancy import Permission, Principal, Role

PEER_TIMEOUT_S = 120.0  # a sibling loading a large model from cold may take this long
IN_FLIGHT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class WorkerReport:
    """One worker's side of a fleet-wide request."""

    worker: int
    pid: int | None
    ok: bool
    detail: dict[str, Any]
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        body = {"worker": self.worker, "pid": self.pid, "ok": self.ok, **self.detail}
        return body if self.error is None else body | {"error": self.error}


class WorkerFleet:
    """This worker and its siblings, as one for the requests that concern each one's memory."""

    def __init__(
        self,
        inference: InferenceService,
        peers: WorkerPeers,
        in_flight: InFlightKeys | None = None,
    ) -> None:
        self._inference = inference
        self._peers = peers
        self._in_flight = in_flight or InFlightKeys()
        self._started_at = time.time()

    async def load(
        self, principal: Principal, ident: str, number: int
    ) -> tuple[ServingModel, int, list[WorkerReport]]:
        serving, memory = await self._inference.load(principal, ident, number)
        mine = WorkerReport(self._peers.slot, os.getpid(), True, {"memoryBytes": memory})
        answers = await self._peers.ask("load", _call(principal, ident, number), PEER_TIMEOUT_S)
        return serving, memory, _in_order(mine, answers)

    async def unload(self, principal: Principal, ident: str, number: int) -> list[WorkerReport]:
        freed = await self._inference.unload(principal, ident, number)
        mine = WorkerReport(self._peers.slot, os.getpid(), True, {"unloaded": freed})
        answers = await self._peers.ask("unload", _call(principal, ident, number), PEER_TIMEOUT_S)
        return _in_order(mine, answers)

    async def status(self, principal: Principal) -> list[WorkerReport]:
        """Every worker's pid, role and cache use (platform operators only)."""
        principal.require(Permission.TENANTS_MANAGE)
        mine = WorkerReport(self._peers.slot, os.getpid(), True, self._state())
        answers = await self._peers.ask("status", {}, PEER_TIMEOUT_S)
        return _in_order(mine, answers)

    async def handle(self, op: str, args: dict[str, Any]) -> dict[str, Any]:
        """Run a sibling's request here; a refusal is an answer (``DomainError`` carries the reason)."""
        if op == "status":
            return self._state()
        if op == "in_flight":
            return {"keys": self._in_flight.snapshot()}
        principal = Principal(
            str(args["subject"]),
            str(args["tenant"]),
            frozenset(Role(r) for r in args["roles"]),
            None if args.get("models") is None else frozenset(args["models"]),
        )
        if op == "load":
            _, memory = await self._inference.load(principal, args["model"], int(args["version"]))
            return {"memoryBytes": memory}
        if op == "unload":
            return {"unloaded": await self._inference.unload(principal, args["model"], int(args["version"]))}
        raise DomainError(f"unknown worker request {op!r}")

    def siblings_in_flight(self) -> set[str]:
        """The artifact keys the other workers are writing (uploads being inspected): the host
        worker's sweeper must not take them for orphans. A worker that is not running writes
        nothing; one that does not answer stops this pass of the orphan sweep."""
        keys: set[str] = set()
        for answer in self._peers.ask_from_thread("in_flight", {}, IN_FLIGHT_TIMEOUT_S):
            if answer.error == "not running":
                continue
            if not answer.answered or answer.error is not None:
                raise RuntimeError(f"worker {answer.worker} did not say what it is writing: {answer.error}")
            keys.update(answer.result.get("keys", ()))
        return keys

    def _state(self) -> dict[str, Any]:
        cache = self._inference.cache
        return {
            "hostDuties": self._peers.slot == 0,
            "startedAt": self._started_at,
            "cachedModels": cache.count(lambda key: True),
            "cachedBytes": cache.loaded_bytes,
            "cacheBudgetBytes": cache.max_bytes,
        }


def _call(principal: Principal, ident: str, number: int) -> dict[str, Any]:
    models = None if principal.model_ids is None else sorted(principal.model_ids)
    roles = sorted(str(r) for r in principal.roles)
    return {"subject": principal.subject, "tenant": principal.tenant_id, "roles": roles, "models": models} | {
        "model": ident,
        "version": number,
    }


def _in_order(mine: WorkerReport, answers: list[PeerAnswer]) -> list[WorkerReport]:
    return sorted([mine, *map(_report, answers)], key=lambda report: report.worker)


def _report(answer: PeerAnswer) -> WorkerReport:
    ok = answer.answered and answer.error is None
    return WorkerReport(answer.worker, answer.pid, ok, answer.result, answer.error)
