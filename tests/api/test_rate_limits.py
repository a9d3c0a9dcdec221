"""Rate limits over HTTP: budgets per principal and per tenant, predict apart from management, the
RateLimit-* and Retry-After headers, the 429 problem; and the Redis buckets shared by two app
instances, against the Redis server of this machine."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from aiservice.application.ports import TokenBucket
from aiservice.bootstrap import Container, bootstrap
from aiservice.infrastructure.ratelimit.redis import RedisRateLimiter
from aiservice.interfaces.http.app import create_app
from tests.conftest import IN_CI, make_settings

API = "/api/v1/ai"
REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379

App = Callable[..., tuple[TestClient, Container]]


def require_redis() -> None:
    try:
        redis.Redis(REDIS_HOST, REDIS_PORT, socket_connect_timeout=2).ping()
    except redis.RedisError as exc:
        reason = f"Redis at {REDIS_HOST}:{REDIS_PORT} is not reachable: {exc}"
        if IN_CI:
            pytest.fail(f"{reason} (CI=true: Redis tests must run, not skip)")
        pytest.skip(reason)


@pytest.fixture
def app(engine: Engine, database_url: str, tmp_path: Path) -> Iterator[App]:
    """``app(**settings)`` starts an app instance (several share the database and the data folder)."""
    with ExitStack() as stack:

        def start(**overrides: object) -> tuple[TestClient, Container]:
            container = bootstrap(make_settings(database_url, tmp_path / "data", **overrides))
            stack.callback(container.close)
            container.tenants.ensure("acme")
            container.tenants.ensure("globex")
            client = stack.enter_context(TestClient(create_app(container, manage_lifecycle=False)))
            return client, container

        yield start


def headers(container: Container, subject: str = "alice", tenant: str = "acme") -> dict[str, str]:
    token = container.tokens.issue(subject, tenant, ["editor"], 600)
    return {"Authorization": f"Bearer {token}", "X-Tenant-ID": tenant}


def statuses(client: TestClient, container: Container, times: int, **who: str) -> list[int]:
    return [client.get(f"{API}/models", headers=headers(container, **who)).status_code for _ in range(times)]


# Slow enough that no token comes back during a test.
SLOW = 0.001


def test_a_principal_gets_its_burst_then_429(app: App) -> None:
    client, c = app(rate_limit_management_rps=SLOW, rate_limit_management_burst=3)
    assert statuses(client, c, 4) == [200, 200, 200, 429]


def test_the_429_is_a_problem_with_retry_after(app: App) -> None:
    client, c = app(rate_limit_management_rps=0.01, rate_limit_management_burst=1)
    client.get(f"{API}/models", headers=headers(c))
    refused = client.get(f"{API}/models", headers=headers(c))
    assert refused.status_code == 429
    assert refused.headers["content-type"] == "application/problem+json"
    problem = refused.json()
    assert problem["type"] == "https://aiservice.dev/problems/rate-limited"
    assert (problem["status"], problem["limit"], problem["retryAfter"]) == (429, 1, 100)  # 1 token / 0.01 s
    assert refused.headers["retry-after"] == "100"
    assert refused.headers["ratelimit-remaining"] == "0"


def test_allowed_calls_carry_the_ratelimit_fields(app: App) -> None:
    client, c = app(rate_limit_management_rps=0.01, rate_limit_management_burst=5)
    first = client.get(f"{API}/models", headers=headers(c))
    second = client.get(f"{API}/models", headers=headers(c))
    assert (first.headers["ratelimit-limit"], first.headers["ratelimit-remaining"]) == ("5", "4")
    assert second.headers["ratelimit-remaining"] == "3"
    assert 190 <= int(second.headers["ratelimit-reset"]) <= 200  # two tokens short, 0.01 a second
    assert "retry-after" not in second.headers


def test_principals_have_budgets_of_their_own(app: App) -> None:
    client, c = app(rate_limit_management_rps=SLOW, rate_limit_management_burst=1)
    assert statuses(client, c, 2, subject="alice") == [200, 429]
    assert statuses(client, c, 1, subject="bob") == [200]


def test_a_tenant_budget_covers_all_its_principals(app: App) -> None:
    client, c = app(rate_limit_tenant_management_rps=SLOW, rate_limit_tenant_management_burst=2)
    assert statuses(client, c, 1, subject="alice") + statuses(client, c, 2, subject="bob") == [200, 200, 429]
    assert statuses(client, c, 1, subject="alice", tenant="globex") == [200]


def test_predict_calls_spend_their_own_budget(app: App) -> None:
    client, c = app(rate_limit_predict_rps=SLOW, rate_limit_predict_burst=1)
    predict = [
        client.post(f"{API}/models/missing/predict", json={"input": {}}, headers=headers(c)).status_code
        for _ in range(2)
    ]
    assert predict == [404, 429]  # the budget is spent by calls that fail after authentication, too
    assert statuses(client, c, 3) == [200, 200, 200]  # management calls are not limited here


def test_batch_predict_and_v2_infer_are_predict_calls(app: App) -> None:
    client, c = app(rate_limit_predict_rps=SLOW, rate_limit_predict_burst=2)
    batch = client.post(f"{API}/models/missing/batch-predict", json={"inputs": [{}]}, headers=headers(c))
    tensor = {"inputs": [{"name": "input", "shape": [1, 1], "datatype": "FP32", "data": [1.0]}]}
    infer = client.post("/v2/models/missing/infer", json=tensor, headers=headers(c))
    third = client.post("/v2/models/missing/versions/1/infer", json=tensor, headers=headers(c))
    assert (batch.status_code, infer.status_code, third.status_code) == (404, 404, 429)


def test_management_budget_does_not_limit_predict_calls(app: App) -> None:
    client, c = app(rate_limit_management_rps=SLOW, rate_limit_management_burst=1)
    assert statuses(client, c, 2) == [200, 429]
    response = client.post(f"{API}/models/missing/predict", json={"input": {}}, headers=headers(c))
    assert response.status_code == 404
    assert "ratelimit-limit" not in response.headers


def test_health_metrics_and_unauthenticated_calls_are_not_limited(app: App) -> None:
    client, _ = app(rate_limit_management_rps=SLOW, rate_limit_management_burst=1)
    for path in ("/health", "/metrics", "/v2/health/live", "/openapi.json"):
        responses = [client.get(path) for _ in range(3)]
        assert [r.status_code for r in responses] == [200, 200, 200], path
        assert "ratelimit-limit" not in responses[-1].headers
    assert [client.get(f"{API}/models").status_code for _ in range(2)] == [401, 401]


def test_limits_are_off_by_default(app: App) -> None:
    client, c = app()
    responses = [client.get(f"{API}/models", headers=headers(c)) for _ in range(50)]
    assert {r.status_code for r in responses} == {200}
    assert "ratelimit-limit" not in responses[-1].headers


def test_refusals_are_counted_in_the_metrics(app: App) -> None:
    client, c = app(rate_limit_management_rps=SLOW, rate_limit_management_burst=1)
    statuses(client, c, 3)
    assert 'ai_service_rate_limited_total{rate_class="management"} 2.0' in client.get("/metrics").text


# -- Redis -------------------------------------------------------------------------------------


@pytest.fixture
def prefix() -> Iterator[str]:
    """Keys of this test only, removed afterwards."""
    require_redis()
    value = f"aiservice-test:{uuid.uuid4().hex}:"
    yield value
    client = redis.Redis(REDIS_HOST, REDIS_PORT)
    for key in client.scan_iter(match=f"{value}*"):
        client.delete(key)
    client.close()


@pytest.fixture
def shared_limiter(prefix: str) -> Iterator[RedisRateLimiter]:
    limiter = RedisRateLimiter(REDIS_HOST, REDIS_PORT)
    yield limiter
    limiter.close()


def test_redis_buckets_give_the_burst_then_refuse(shared_limiter: RedisRateLimiter, prefix: str) -> None:
    bucket = TokenBucket(f"{prefix}k", SLOW, 3)
    decisions = [shared_limiter.acquire([bucket]) for _ in range(4)]
    assert [d.allowed if d else None for d in decisions] == [True, True, True, False]
    assert [d.remaining if d else None for d in decisions] == [2, 1, 0, 0]


def test_redis_buckets_refill_at_the_rate(shared_limiter: RedisRateLimiter, prefix: str) -> None:
    bucket = TokenBucket(f"{prefix}k", 20.0, 1)
    assert shared_limiter.acquire([bucket]).allowed  # type: ignore[union-attr]
    refused = shared_limiter.acquire([bucket])
    assert refused is not None and not refused.allowed
    assert 0 < refused.retry_after_seconds <= 0.05
    time.sleep(0.06)
    assert shared_limiter.acquire([bucket]).allowed  # type: ignore[union-attr]


def test_redis_refusal_by_one_bucket_spends_nothing_from_the_other(
    shared_limiter: RedisRateLimiter, prefix: str
) -> None:
    roomy, tight = TokenBucket(f"{prefix}roomy", SLOW, 10), TokenBucket(f"{prefix}tight", SLOW, 1)
    shared_limiter.acquire([roomy, tight])
    shared_limiter.acquire([roomy, tight])
    assert shared_limiter.acquire([roomy]).remaining == 8  # type: ignore[union-attr]


def test_two_app_instances_share_one_budget_through_redis(app: App, prefix: str) -> None:
    limits = {
        "redis_host": REDIS_HOST,
        "redis_port": REDIS_PORT,
        "rate_limit_key_prefix": prefix,
        "rate_limit_management_rps": SLOW,
        "rate_limit_management_burst": 3,
    }
    first, c1 = app(**limits)
    second, c2 = app(**limits)
    assert statuses(first, c1, 2) == [200, 200]
    assert second.get(f"{API}/models", headers=headers(c2)).headers["ratelimit-remaining"] == "0"
    assert statuses(first, c1, 1) == [429]
    assert statuses(second, c2, 1, subject="bob") == [200]  # another principal: its own budget


def test_an_unreachable_redis_lets_calls_through_and_counts_them(app: App) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client, c = app(
        redis_host="127.0.0.1",
        redis_port=port,
        rate_limit_management_rps=SLOW,
        rate_limit_management_burst=1,
    )
    responses = [client.get(f"{API}/models", headers=headers(c)) for _ in range(3)]
    assert [r.status_code for r in responses] == [200, 200, 200]
    assert "ratelimit-limit" not in responses[0].headers
    assert "ai_service_rate_limit_unchecked_total 3.0" in client.get("/metrics").text
