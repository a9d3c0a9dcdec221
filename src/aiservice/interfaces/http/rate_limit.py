"""Spending a caller's request budget once it is authenticated (the budgets are per principal and
per tenant). The verdict is kept in the request's state, where the security headers middleware
renders it as ``RateLimit-*`` (and ``Retry-After`` on a 429)."""

from __future__ import annotations

import re

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from aiservice.application.ports import RequestMetrics
from aiservice.application.rate_limits import RateClass, RateLimits, refusal
from aiservice.domain.tenancy import Principal
from aiservice.interfaces.http.paths import API_PREFIX

RATE_LIMIT_STATE = "rate_limit"
PREDICT_PATH = re.compile(
    rf"^(?:{re.escape(API_PREFIX)}/models/[^/]+/(?:batch-)?predict|/v2/models/[^/]+(?:/versions/[^/]+)?/infer)$"
)


def rate_class(path: str) -> RateClass:
    return RateClass.PREDICT if PREDICT_PATH.match(path) else RateClass.MANAGEMENT


async def spend(request: Request, limits: RateLimits, caller: Principal, metrics: RequestMetrics) -> None:
    """Raises ``RateLimited`` when the call's budget is spent. In-process buckets are asked on the
    event loop (no I/O); a shared store is asked from a worker thread."""
    kind = rate_class(request.scope["path"])
    if limits.limiter.blocking:
        decision = await run_in_threadpool(limits.check, caller, kind)
    else:
        decision = limits.check(caller, kind)
    if decision is None:
        return
    request.state[RATE_LIMIT_STATE] = decision
    if not decision.allowed:
        metrics.rate_limited_call(kind.value)
        raise refusal(decision, kind)
