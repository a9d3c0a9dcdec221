"""Request budgets per principal and per tenant, for predict calls and for management calls.

Every call takes one token from each bucket that applies to it (the caller's own and its tenant's),
atomically: a call refused by one budget spends nothing from the other.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from enum import StrEnum

from aiservice.application.ports import RateDecision, RateLimiter, TokenBucket
from aiservice.domain.errors import RateLimited
from aiservice.domain.tenancy import Principal


class RateClass(StrEnum):
    PREDICT = "predict"
    MANAGEMENT = "management"


@dataclass(frozen=True)
class RateLimit:
    """``rate`` requests a second, ``burst`` at once (0: the rate rounded up). A zero rate is no limit."""

    rate: float
    burst: int = 0

    @property
    def capacity(self) -> int:
        return self.burst or max(1, math.ceil(self.rate))


@dataclass(frozen=True)
class RateLimitPolicy:
    per_principal: dict[RateClass, RateLimit] = field(default_factory=dict)
    per_tenant: dict[RateClass, RateLimit] = field(default_factory=dict)


class RateLimits:
    """Which buckets a call draws on, and the verdict of the limiter on them."""

    def __init__(self, limiter: RateLimiter, policy: RateLimitPolicy, key_prefix: str = "") -> None:
        self.limiter = limiter
        self._prefix = key_prefix
        self._principal = {c: lim for c, lim in policy.per_principal.items() if lim.rate > 0}
        self._tenant = {c: lim for c, lim in policy.per_tenant.items() if lim.rate > 0}
        self.enabled = bool(self._principal or self._tenant)
        # The same callers call again and again: their buckets are made once (per instance, not per class).
        self._buckets = functools.lru_cache(maxsize=4096)(self._make_buckets)

    def buckets(self, caller: Principal, rate_class: RateClass) -> list[TokenBucket]:
        return self._buckets(caller.tenant_id, caller.subject, rate_class)

    def _make_buckets(self, tenant: str, subject: str, rate_class: RateClass) -> list[TokenBucket]:
        # The tenant in braces is a Redis Cluster hash tag: a call's buckets share one slot.
        base = f"{self._prefix}{rate_class.value}:{{{tenant}}}"
        buckets = []
        if limit := self._principal.get(rate_class):
            buckets.append(TokenBucket(f"{base}:{subject}", limit.rate, limit.capacity))
        if limit := self._tenant.get(rate_class):
            buckets.append(TokenBucket(base, limit.rate, limit.capacity))
        return buckets

    def check(self, caller: Principal, rate_class: RateClass) -> RateDecision | None:
        """The verdict on one call (a token is spent when it is allowed); None when no limit applies."""
        buckets = self.buckets(caller, rate_class)
        return self.limiter.acquire(buckets) if buckets else None

    def close(self) -> None:
        self.limiter.close()


def refusal(decision: RateDecision, rate_class: RateClass) -> RateLimited:
    wait = retry_after(decision)
    return RateLimited(
        f"Too many {rate_class} requests: the budget of {decision.limit} is spent; retry in {wait} s.",
        extra={"limit": decision.limit, "retryAfter": wait, "rateClass": str(rate_class)},
    )


def retry_after(decision: RateDecision) -> int:
    """Whole seconds, as ``Retry-After`` wants them, never 0 for a refusal."""
    return max(1, math.ceil(decision.retry_after_seconds))


def decide(buckets: list[TokenBucket], levels: list[float], allowed: bool) -> RateDecision:
    """The decision from each bucket's level after the call (shared by every limiter adapter)."""
    tightest = 0
    for i in range(1, len(buckets)):  # fewest tokens left; on a tie, the longest to fill again
        if levels[i] < levels[tightest] or (
            levels[i] == levels[tightest]
            and _until_full(buckets[i], levels[i]) > _until_full(buckets[tightest], levels[tightest])
        ):
            tightest = i
    wait = 0.0
    if not allowed:
        wait = max((1 - level) / b.rate for b, level in zip(buckets, levels, strict=True) if level < 1)
    bucket, level = buckets[tightest], levels[tightest]
    return RateDecision(
        allowed=allowed,
        limit=bucket.burst,
        remaining=max(0, int(level)),
        reset_seconds=_until_full(bucket, level),
        retry_after_seconds=wait,
    )


def refill(bucket: TokenBucket, level: float, elapsed: float) -> float:
    return min(float(bucket.burst), level + max(0.0, elapsed) * bucket.rate)


def _until_full(bucket: TokenBucket, level: float) -> float:
    return max(0.0, bucket.burst - level) / bucket.rate
