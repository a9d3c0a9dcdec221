"""What the SDK does when the service pushes back or is gone: a real 429 from the rate limiter retried after
its Retry-After (a POST too: nothing was done), the same 429 raised with its problem when retries are off,
and a service that is down raised as a ConnectionError (idempotent calls retried first, others not)."""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine

from aiservice.bootstrap import bootstrap
from aiservice.client import RateLimitedError, ServiceUnreachableError
from aiservice.client._core import Reply, RetryPolicy
from tests.client.conftest import Connect, serve
from tests.conftest import make_settings


@pytest.fixture
def limited(engine: Engine, database_url: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A service allowing each caller one management call a second (burst 1): ``(url, token)``."""
    settings = make_settings(
        database_url, tmp_path / "data", rate_limit_management_rps=1.0, rate_limit_management_burst=1
    )
    container = bootstrap(settings)
    container.tenants.ensure("acme")
    try:
        with serve(container) as url:
            yield url, container.tokens.issue("sdk-user", "acme", ["admin"], 600)
    finally:
        container.close()


def retries_logged(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "aiservice.client" and hasattr(r, "retry_delay")]


def test_a_429_is_retried_after_its_retry_after(
    connect: Connect, limited: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    url, token = limited
    sdk = connect(url, token, "acme", retries=3)
    sdk.models.create("first", "sklearn")  # spends the only token

    with caplog.at_level(logging.WARNING, logger="aiservice.client"):
        second = sdk.models.create("second", "sklearn")  # refused once, then let through

    assert second.name == "second"
    retries = retries_logged(caplog)
    assert [r.retry_status for r in retries][:1] == [429]  # type: ignore[attr-defined]
    assert retries[0].retry_delay == 1.0  # type: ignore[attr-defined]  # the service's Retry-After


def test_without_retries_the_429_is_raised_with_its_problem(
    connect: Connect, limited: tuple[str, str]
) -> None:
    url, token = limited
    sdk = connect(url, token, "acme", retries=0)
    sdk.models.create("first", "sklearn")
    with pytest.raises(RateLimitedError) as caught:
        sdk.models.get("first")
    assert caught.value.status == 429 and caught.value.code == "rate-limited"
    assert caught.value.retry_after is not None and caught.value.retry_after >= 1


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port  # closed again: nothing listens there


def test_a_service_that_is_down_is_a_connection_error(
    connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    sdk = connect(f"http://127.0.0.1:{_closed_port()}", "token", "acme", retries=2, backoff=0.01)
    with (
        caplog.at_level(logging.WARNING, logger="aiservice.client"),
        pytest.raises(ConnectionError) as caught,
    ):
        sdk.models.get("iris")
    assert isinstance(caught.value, ServiceUnreachableError)
    assert "cannot reach the service at http://127.0.0.1:" in str(caught.value)
    assert len(retries_logged(caplog)) == 2  # a GET is safe to try again


def test_a_post_is_not_retried_when_the_connection_fails(
    connect: Connect, caplog: pytest.LogCaptureFixture
) -> None:
    sdk = connect(f"http://127.0.0.1:{_closed_port()}", "token", "acme", retries=2, backoff=0.01)
    with caplog.at_level(logging.WARNING, logger="aiservice.client"), pytest.raises(ServiceUnreachableError):
        sdk.models.create("iris", "sklearn")
    assert retries_logged(caplog) == []  # it may have reached the service: not sent twice


def _reply(status: int, **headers: str) -> Reply:
    return Reply(status, {k.replace("_", "-"): v for k, v in headers.items()}, b"")


def test_the_retry_policy_backs_off_exponentially_and_gives_up() -> None:
    policy = RetryPolicy(retries=3, backoff=1.0, max_delay=10.0)
    delays = [policy.delay(attempt, _reply(503), idempotent=False) for attempt in range(4)]
    assert [d is not None and 2**i <= d <= 2**i * 1.25 for i, d in enumerate(delays[:3])] == [True] * 3
    assert delays[3] is None  # retries spent
    assert policy.delay(0, _reply(429, retry_after="7"), idempotent=False) == 7.0
    assert policy.delay(0, _reply(429, retry_after="3600"), idempotent=True) is None  # past max_delay
    assert policy.delay(0, _reply(500), idempotent=True) is None
    assert policy.delay(0, None, idempotent=False) is None


def test_importing_the_sdk_loads_nothing_of_the_service_or_of_a_framework() -> None:
    import subprocess
    import sys

    probe = (
        "import sys, aiservice.client\n"
        "heavy = ('aiservice.domain', 'aiservice.application', 'aiservice.infrastructure', "
        "'aiservice.interfaces', 'aiservice.bootstrap', 'aiservice.settings', 'fastapi', 'sqlalchemy', "
        "'torch', 'sklearn', 'xgboost', 'pandas')\n"
        "print(sorted(m for m in sys.modules if m.startswith(heavy)))\n"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert loaded.stdout.strip() == "[]"


def test_the_async_client_has_the_sync_clients_surface() -> None:
    import inspect

    from aiservice.client import aio, aio_resources, jobs, resources, sync

    names = ("Models", "Versions", "Jobs", "Deployments", "Experiments", "Datasets")
    pairs: list[tuple[Any, Any]] = [
        (sync.Client, aio.AsyncClient),
        (jobs.TrainingJob, jobs.AsyncTrainingJob),
        *((getattr(resources, n), getattr(aio_resources, f"Async{n}")) for n in names),
    ]
    for sync_kind, async_kind in pairs:
        public = {n for n in dir(sync_kind) if not n.startswith("_")}
        assert public == {n for n in dir(async_kind) if not n.startswith("_")}, sync_kind
        for name in public:
            ours, theirs = getattr(sync_kind, name), getattr(async_kind, name)
            if callable(ours):
                assert (
                    inspect.signature(ours).parameters.keys() == inspect.signature(theirs).parameters.keys()
                )
