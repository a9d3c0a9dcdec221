"""The RateLimiter contract, for every adapter (in-process, shared memory, Redis): bursts, refills,
several buckets all or nothing, the numbers in the decision, keys apart, and what a new instance on
the same store remembers. Then the shared-memory file itself: processes that share it lose no update,
a damaged file is made anew, and a crowded table still gives a new key its burst.

The in-process and shared-memory adapters read a clock the test moves. Redis reads its server's, so
there the test sleeps and compares times with a little slack (this machine's Redis: skipped without
it, except under CI=true, where it fails)."""

from __future__ import annotations

import multiprocessing
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from pathlib import Path

import pytest
import redis

from aiservice.application.ports import RateDecision, RateLimiter, TokenBucket
from aiservice.application.rate_limits import decide
from aiservice.infrastructure.ratelimit.memory import InMemoryRateLimiter
from aiservice.infrastructure.ratelimit.redis import RedisRateLimiter
from aiservice.infrastructure.ratelimit.shared_memory import HEADER, SLOT, SharedMemoryRateLimiter
from tests.unit.test_token_bucket import FakeClock

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
SLOW = 0.001  # tokens a second: none comes back during a test


@dataclass
class Subject:
    """An adapter under test, and what a test needs around it."""

    limiter: RateLimiter
    new_instance: Callable[[], RateLimiter]  # another limiter on the same store
    advance: Callable[[float], None]  # lets time pass on the adapter's clock
    prefix: str  # of this test's keys
    shared: bool  # whether buckets outlive the instance
    slack: float  # seconds the adapter's clock may run on by itself between two calls

    def bucket(self, key: str, rate: float, burst: int) -> TokenBucket:
        return TokenBucket(f"{self.prefix}{key}", rate, burst)

    def acquire(self, *buckets: TokenBucket) -> RateDecision:
        decision = self.limiter.acquire(list(buckets))
        assert decision is not None
        return decision

    def allowed(self, *buckets: TokenBucket) -> bool:
        return self.acquire(*buckets).allowed


@pytest.fixture(params=["memory", "shared_memory", "redis"])
def subject(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Subject]:
    clock, prefix = FakeClock(), f"aiservice-test:{uuid.uuid4().hex}:"
    makers: dict[str, Callable[[], RateLimiter]] = {
        "memory": lambda: InMemoryRateLimiter(clock),
        "shared_memory": lambda: SharedMemoryRateLimiter(tmp_path / "buckets", clock=clock),
        "redis": lambda: RedisRateLimiter(REDIS_HOST, REDIS_PORT),
    }
    opened: list[RateLimiter] = []

    def new_instance() -> RateLimiter:
        opened.append(makers[request.param]())
        return opened[-1]

    if request.param == "redis":
        # Imported here, not above: the processes spawned below import this module, not the fixtures.
        from tests.events.brokers import require_listening

        require_listening(REDIS_PORT, "Redis")
        yield Subject(new_instance(), new_instance, time.sleep, prefix, True, 0.05)
        client = redis.Redis(REDIS_HOST, REDIS_PORT)
        for key in client.scan_iter(match=f"{prefix}*"):
            client.delete(key)
        client.close()
    else:
        yield Subject(new_instance(), new_instance, clock.advance, prefix, request.param != "memory", 1e-9)
    for limiter in opened:
        limiter.close()


def assert_decision(subject: Subject, got: RateDecision, expected: RateDecision) -> None:
    assert (got.allowed, got.limit, got.remaining) == (expected.allowed, expected.limit, expected.remaining)
    assert got.reset_seconds == pytest.approx(expected.reset_seconds, abs=subject.slack)
    assert got.retry_after_seconds == pytest.approx(expected.retry_after_seconds, abs=subject.slack)


def test_a_full_bucket_lets_its_burst_through_then_refuses(subject: Subject) -> None:
    bucket = subject.bucket("k", SLOW, 3)
    decisions = [subject.acquire(bucket) for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    assert {d.limit for d in decisions} == {3}


def test_tokens_come_back_at_the_rate_up_to_the_burst(subject: Subject) -> None:
    bucket = subject.bucket("k", 5.0, 2)
    assert [subject.allowed(bucket) for _ in range(3)] == [True, True, False]
    subject.advance(0.1)  # half a token
    assert not subject.allowed(bucket)
    subject.advance(0.12)  # 1.1 tokens
    assert [subject.allowed(bucket) for _ in range(2)] == [True, False]
    subject.advance(1.0)  # five tokens' worth, but the burst is 2
    assert [subject.allowed(bucket) for _ in range(3)] == [True, True, False]


def test_a_call_refused_by_one_bucket_spends_nothing_from_the_others(subject: Subject) -> None:
    roomy, tight = subject.bucket("roomy", SLOW, 10), subject.bucket("tight", SLOW, 1)
    assert subject.allowed(roomy, tight)
    assert not subject.allowed(roomy, tight)
    assert not subject.allowed(tight, roomy)
    assert subject.acquire(roomy).remaining == 8  # the one allowed call and this one


def test_the_decision_is_the_one_decide_makes_from_the_levels(subject: Subject) -> None:
    principal, tenant = subject.bucket("p", 1.0, 5), subject.bucket("t", 0.5, 2)
    buckets = [principal, tenant]
    assert_decision(subject, subject.acquire(*buckets), decide(buckets, [4.0, 1.0], True))
    assert_decision(subject, subject.acquire(*buckets), decide(buckets, [3.0, 0.0], True))
    refused = subject.acquire(*buckets)
    assert_decision(subject, refused, decide(buckets, [3.0, 0.0], False))
    assert (refused.limit, refused.retry_after_seconds) == (2, pytest.approx(2.0, abs=subject.slack))


def test_keys_do_not_share_tokens(subject: Subject) -> None:
    first, second = subject.bucket("a", SLOW, 1), subject.bucket("b", SLOW, 1)
    assert subject.allowed(first)
    assert not subject.allowed(first)
    assert subject.allowed(second)


def test_a_new_instance_on_the_same_store_remembers_only_if_the_store_is_shared(subject: Subject) -> None:
    bucket = subject.bucket("k", SLOW, 2)
    subject.acquire(bucket)
    subject.limiter.close()
    decision = subject.new_instance().acquire([bucket])
    assert decision is not None and decision.allowed
    assert decision.remaining == (0 if subject.shared else 1)


# -- the shared-memory file ----------------------------------------------------------------------


def hammer(path: Path, bucket: TokenBucket, attempts: int, start: Barrier, allowed: Queue[int]) -> None:
    """One worker process: ``attempts`` calls on ``bucket`` at once with the others, on the real clock."""
    limiter = SharedMemoryRateLimiter(path)
    start.wait()
    allowed.put(sum(limiter.acquire([bucket]).allowed for _ in range(attempts)))
    limiter.close()


def test_processes_sharing_the_file_let_exactly_the_burst_through(tmp_path: Path) -> None:
    processes, attempts, bucket = 4, 600, TokenBucket("k", 1e-9, 1000)
    context = multiprocessing.get_context("spawn")
    start, allowed = context.Barrier(processes), context.Queue()
    path = tmp_path / "buckets"
    workers = [
        context.Process(target=hammer, args=(path, bucket, attempts, start, allowed))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    counts = [allowed.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join(timeout=10)
        assert worker.exitcode == 0
    allowed.close()
    assert sum(counts) == bucket.burst  # 2400 tries on a burst of 1000: no update lost, none doubled


@pytest.mark.parametrize("damage", ["short", "wrong magic"])
def test_a_damaged_file_is_made_anew(tmp_path: Path, damage: str) -> None:
    path, size = tmp_path / "buckets", HEADER.size + 64 * SLOT.size
    path.write_bytes(b"junk" if damage == "short" else b"\xff" * size)
    limiter = SharedMemoryRateLimiter(path, slots=64, clock=FakeClock())
    bucket = TokenBucket("k", SLOW, 2)
    assert [limiter.acquire([bucket]).allowed for _ in range(3)] == [True, True, False]
    limiter.close()
    assert path.stat().st_size == size


def test_a_file_keeps_its_slot_count_for_a_limiter_configured_otherwise(tmp_path: Path) -> None:
    clock, bucket = FakeClock(), TokenBucket("k", SLOW, 2)
    first = SharedMemoryRateLimiter(tmp_path / "buckets", slots=64, clock=clock)
    second = SharedMemoryRateLimiter(tmp_path / "buckets", slots=4096, clock=clock)
    assert first.acquire([bucket]).allowed
    assert second.acquire([bucket]).remaining == 0
    first.close()
    second.close()
    assert (tmp_path / "buckets").stat().st_size == HEADER.size + 64 * SLOT.size


def test_a_crowded_table_forgets_the_bucket_full_soonest(tmp_path: Path) -> None:
    limiter = SharedMemoryRateLimiter(tmp_path / "buckets", slots=64, clock=FakeClock())
    soon, *later = [TokenBucket(f"k{i}", 1.0 if i == 0 else SLOW, 1) for i in range(64)]
    for bucket in [soon, *later]:
        assert limiter.acquire([bucket]).allowed  # every slot holds a bucket that is not full
    assert limiter.acquire([TokenBucket("new", SLOW, 1)]).allowed
    assert not any(limiter.acquire([bucket]).allowed for bucket in later)
    assert limiter.acquire([soon]).allowed  # forgotten, so full again
    limiter.close()


def test_a_forked_copy_opens_the_file_again_and_keeps_the_buckets(tmp_path: Path) -> None:
    limiter = SharedMemoryRateLimiter(tmp_path / "buckets", clock=FakeClock())
    bucket = TokenBucket("k", SLOW, 3)
    limiter.acquire([bucket])
    limiter._pid = -1  # as in a child forked after it was made: the flock must not be its parent's
    assert limiter.acquire([bucket]).remaining == 1
    assert limiter._pid == os.getpid()
    limiter.close()
