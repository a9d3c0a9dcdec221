"""Token buckets in this process, on a clock the tests move: bursts, refusals, refills, several
budgets at once, and which buckets a caller's call draws on."""

from __future__ import annotations

import pytest

from aiservice.application.ports import TokenBucket
from aiservice.application.rate_limits import RateClass, RateLimit, RateLimitPolicy, RateLimits
from aiservice.domain.tenancy import Principal, Role
from aiservice.infrastructure.ratelimit.memory import InMemoryRateLimiter


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def limiter(clock: FakeClock) -> InMemoryRateLimiter:
    return InMemoryRateLimiter(clock)


def spend(limiter: InMemoryRateLimiter, *buckets: TokenBucket) -> bool:
    decision = limiter.acquire(list(buckets))
    return decision.allowed


def test_a_full_bucket_lets_its_burst_through_then_refuses(limiter: InMemoryRateLimiter) -> None:
    bucket = TokenBucket("k", rate=1.0, burst=3)
    assert [spend(limiter, bucket) for _ in range(4)] == [True, True, True, False]


def test_remaining_counts_down_and_the_limit_is_the_burst(limiter: InMemoryRateLimiter) -> None:
    bucket = TokenBucket("k", rate=1.0, burst=3)
    decisions = [limiter.acquire([bucket]) for _ in range(4)]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    assert {d.limit for d in decisions} == {3}


def test_a_refusal_says_when_the_next_token_comes(limiter: InMemoryRateLimiter) -> None:
    bucket = TokenBucket("k", rate=0.5, burst=1)
    limiter.acquire([bucket])
    refused = limiter.acquire([bucket])
    assert not refused.allowed
    assert refused.retry_after_seconds == pytest.approx(2.0)
    assert refused.reset_seconds == pytest.approx(2.0)


def test_tokens_come_back_at_the_rate(limiter: InMemoryRateLimiter, clock: FakeClock) -> None:
    bucket = TokenBucket("k", rate=2.0, burst=2)
    assert spend(limiter, bucket) and spend(limiter, bucket)
    assert not spend(limiter, bucket)
    clock.advance(0.4)  # 0.8 tokens: not yet one
    assert not spend(limiter, bucket)
    clock.advance(0.1)
    assert spend(limiter, bucket)
    assert not spend(limiter, bucket)


def test_an_idle_bucket_refills_only_up_to_its_burst(limiter: InMemoryRateLimiter, clock: FakeClock) -> None:
    bucket = TokenBucket("k", rate=10.0, burst=2)
    spend(limiter, bucket)
    clock.advance(3600)
    assert [spend(limiter, bucket) for _ in range(3)] == [True, True, False]


def test_refused_calls_do_not_push_the_refill_back(limiter: InMemoryRateLimiter, clock: FakeClock) -> None:
    bucket = TokenBucket("k", rate=1.0, burst=1)
    spend(limiter, bucket)
    for _ in range(5):
        clock.advance(0.19)
        assert not spend(limiter, bucket)
    clock.advance(0.05)  # 1.0 s since the token was spent
    assert spend(limiter, bucket)


def test_buckets_are_independent_by_key(limiter: InMemoryRateLimiter) -> None:
    first, second = TokenBucket("a", 1.0, 1), TokenBucket("b", 1.0, 1)
    assert spend(limiter, first)
    assert not spend(limiter, first)
    assert spend(limiter, second)


def test_a_call_refused_by_one_bucket_spends_nothing_from_the_other(limiter: InMemoryRateLimiter) -> None:
    roomy, tight = TokenBucket("roomy", 1.0, 10), TokenBucket("tight", 1.0, 1)
    assert spend(limiter, roomy, tight)
    assert not spend(limiter, roomy, tight)
    assert limiter.acquire([roomy]).remaining == 8  # only the allowed call and this one spent


def test_the_decision_is_told_by_the_tightest_bucket(limiter: InMemoryRateLimiter) -> None:
    principal, tenant = TokenBucket("p", 1.0, 5), TokenBucket("t", 1.0, 2)
    decision = limiter.acquire([principal, tenant])
    assert (decision.limit, decision.remaining) == (2, 1)


def test_full_buckets_are_forgotten_when_there_are_many(clock: FakeClock) -> None:
    limiter = InMemoryRateLimiter(clock, max_keys=10)
    for i in range(10):
        limiter.acquire([TokenBucket(f"k{i}", 100.0, 1)])
    clock.advance(1)  # all full again
    limiter.acquire([TokenBucket("new", 1.0, 1)])
    assert len(limiter._state) == 1


def caller(subject: str = "alice", tenant: str = "acme") -> Principal:
    return Principal(subject, tenant, frozenset({Role.EDITOR}))


def limits(limiter: InMemoryRateLimiter, policy: RateLimitPolicy) -> RateLimits:
    return RateLimits(limiter, policy, "test:")


def allowed(rl: RateLimits, who: Principal, rate_class: RateClass) -> bool:
    decision = rl.check(who, rate_class)
    assert decision is not None
    return decision.allowed


def test_principals_of_one_tenant_have_budgets_of_their_own(limiter: InMemoryRateLimiter) -> None:
    rl = limits(limiter, RateLimitPolicy(per_principal={RateClass.MANAGEMENT: RateLimit(1, 1)}))
    assert allowed(rl, caller("alice"), RateClass.MANAGEMENT)
    assert not allowed(rl, caller("alice"), RateClass.MANAGEMENT)
    assert allowed(rl, caller("bob"), RateClass.MANAGEMENT)


def test_a_tenant_budget_is_shared_by_its_principals(limiter: InMemoryRateLimiter) -> None:
    rl = limits(limiter, RateLimitPolicy(per_tenant={RateClass.PREDICT: RateLimit(1, 2)}))
    assert allowed(rl, caller("alice"), RateClass.PREDICT)
    assert allowed(rl, caller("bob"), RateClass.PREDICT)
    assert not allowed(rl, caller("carol"), RateClass.PREDICT)
    assert allowed(rl, caller("alice", tenant="globex"), RateClass.PREDICT)


def test_predict_and_management_budgets_are_separate(limiter: InMemoryRateLimiter) -> None:
    one = RateLimit(1, 1)
    rl = limits(limiter, RateLimitPolicy(per_principal={RateClass.PREDICT: one, RateClass.MANAGEMENT: one}))
    assert allowed(rl, caller(), RateClass.PREDICT)
    assert allowed(rl, caller(), RateClass.MANAGEMENT)
    assert not allowed(rl, caller(), RateClass.PREDICT)


def test_a_zero_rate_is_no_limit(limiter: InMemoryRateLimiter) -> None:
    rl = limits(limiter, RateLimitPolicy(per_principal={RateClass.PREDICT: RateLimit(0, 5)}))
    assert not rl.enabled
    assert rl.check(caller(), RateClass.PREDICT) is None


def test_a_burst_of_zero_is_the_rate_rounded_up() -> None:
    assert (RateLimit(2.5).capacity, RateLimit(0.1).capacity, RateLimit(3, 7).capacity) == (3, 1, 7)
