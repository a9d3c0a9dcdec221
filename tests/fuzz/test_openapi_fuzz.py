"""Schemathesis fuzzes every operation of ``/openapi.json`` with a valid admin token: no request, valid or
not, gets a 5xx, and every response matches what the schema declares (status, media type, body).

The number of generated cases per operation is ``FUZZ_EXAMPLES`` (5 in the normal suite, 200 under
``make fuzz``); generation is derandomised and Hypothesis keeps no database, so a run is reproducible.
The operations are dealt into ``SHARDS`` tests, each against a freshly seeded service, so that xdist
workers share the work.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from schemathesis import APIOperation, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from aiservice.bootstrap import bootstrap
from aiservice.infrastructure.db.engine import create_engine
from aiservice.interfaces.http.app import create_app
from tests.conftest import empty_database, make_settings
from tests.helpers import create_model, upload

pytestmark = pytest.mark.fuzz

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "5"))
SHARDS = 4
TENANT = "acme"
MODEL = "iris"
ALIAS = "champion"
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def _config(seed: int) -> schemathesis.Config:
    """Positive and negative cases, reproducible; path parameters name the seeded objects half the time."""
    return schemathesis.Config.from_dict(
        {
            "seed": seed,
            "generation": {"mode": "all", "max-examples": EXAMPLES, "deterministic": True},
            "phases": {"stateful": {"enabled": False}},
            "dictionaries": {
                "models": {"values": [MODEL]},
                "versions": {"values": [1, "1", "latest", ALIAS]},
                "aliases": {"values": [ALIAS]},
                "tenants": {"values": [TENANT]},
            },
            "parameters": {
                "model": {"dictionary": "models", "probability": 0.5},
                "name": {"dictionary": "models", "probability": 0.5},
                "version": {"dictionary": "versions", "probability": 0.5},
                "alias": {"dictionary": "aliases", "probability": 0.5},
                "tenant": {"dictionary": "tenants", "probability": 0.5},
                "reference": {"dictionary": "models", "probability": 0.5},
            },
        }
    )


@pytest.fixture
def fuzzed(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[object, dict]]:
    """The app, tenant ``acme`` holding model ``iris`` (version 1, alias ``champion``), and its headers."""
    container = bootstrap(make_settings(database_url, tmp_path_factory.mktemp("fuzz") / "data"))
    container.tenants.ensure(TENANT)
    token = container.tokens.issue("fuzzer", TENANT, ["admin"], 3600)
    headers = {"Authorization": f"Bearer {token}", "X-Tenant-ID": TENANT}
    app = create_app(container, manage_lifecycle=False)
    container.start()
    try:
        client = TestClient(app)
        create_model(client, headers, MODEL)
        assert upload(client, headers, MODEL).status_code == 201
        put = client.put(f"/api/v1/ai/models/{MODEL}/aliases/{ALIAS}", json={"version": 1}, headers=headers)
        assert put.status_code == 200, put.text
        yield app, headers
    finally:
        container.close()
        engine = create_engine(database_url)
        empty_database(engine)
        engine.dispose()


def _fuzz(operation: APIOperation, headers: dict[str, str]) -> str | None:
    """Fuzz one operation with valid and invalid cases; the first failure, shrunk, or None."""
    strategy = operation.as_strategy(GenerationMode.POSITIVE) | operation.as_strategy(GenerationMode.NEGATIVE)

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case: schemathesis.Case) -> None:
        case.call_and_validate(headers=headers, checks=CHECKS)

    try:
        run()
    except (Exception, BaseExceptionGroup) as exc:  # schemathesis groups the failures it found
        return f"{operation.label}: {exc}"
    return None


@pytest.mark.parametrize("shard", range(SHARDS))
def test_no_server_error_and_every_response_matches_the_schema(
    fuzzed: tuple[object, dict], shard: int
) -> None:
    app, headers = fuzzed
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=_config(seed=5))
    every = sorted((result.ok() for result in schema.get_all_operations()), key=lambda op: op.label)
    assert len(every) > 40, "the schema lost its operations"
    operations = every[shard::SHARDS]  # every operation is in exactly one shard
    operations.sort(key=lambda operation: operation.method.upper() == "DELETE")  # the seeded objects last
    failures = [failure for operation in operations if (failure := _fuzz(operation, headers))]
    assert not failures, "\n\n".join(failures)
