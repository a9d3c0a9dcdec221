"""Every authenticated endpoint refuses bad credentials, suspended and mismatched tenants, and callers
over quota, always as problem+json, never 5xx, never echoing the token; another tenant meets 404s.

The endpoint table is the one the role matrix walks (tests/api/test_auth_api.py), which is checked there
against /openapi.json and the published /permissions table: a new route cannot escape these tests.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi.testclient import TestClient

from aiservice.bootstrap import Container, bootstrap
from aiservice.infrastructure.db.engine import create_engine
from aiservice.interfaces.http.app import create_app
from tests.api.test_auth_api import API, ENDPOINTS, Endpoint, call
from tests.conftest import TEST_SECRET, empty_database, make_settings
from tests.helpers import iris_model_bytes

PROBLEM_JSON = "application/problem+json"


@dataclass
class Service:
    client: TestClient
    container: Container

    def headers(self, tenant: str = "acme", roles: tuple[str, ...] = ("admin",)) -> dict[str, str]:
        token = self.container.tokens.issue("walker", tenant, list(roles), 600)
        return {"Authorization": f"Bearer {token}", "X-Tenant-ID": tenant}

    def root(self) -> dict[str, str]:
        return self.headers("platform", ("superadmin",))


@pytest.fixture(scope="module")
def service(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """One service for the whole module; each test resets the tenants it changes."""
    container = bootstrap(make_settings(database_url, Path(tmp_path_factory.mktemp("walk"))))
    with TestClient(create_app(container)) as client:
        for tenant in ("acme", "globex"):
            container.tenants.ensure(tenant)
        yield Service(client, container)
    container.close()
    engine = create_engine(database_url)
    empty_database(engine)
    engine.dispose()


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _claims(**changes: object) -> dict[str, object]:
    return {"sub": "walker", "tenant": "acme", "roles": ["admin"], "exp": int(time.time()) + 600, **changes}


def _tampered() -> str:
    """A genuine viewer token whose payload is swapped for an admin one of another tenant."""
    header, _, signature = jwt.encode(_claims(roles=["viewer"]), TEST_SECRET, "HS256").split(".")
    return f"{header}.{_b64(_claims(roles=['admin', 'superadmin'], tenant='globex'))}.{signature}"


def _foreign_rsa() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return jwt.encode(_claims(), key, "RS256", headers={"kid": "not-ours"})


BAD_TOKENS: dict[str, str | None] = {
    "missing": None,
    "expired": jwt.encode(_claims(exp=int(time.time()) - 3600), TEST_SECRET, "HS256"),
    "other-key": jwt.encode(_claims(), "another-secret-0123456789-0123456789-xyz", "HS256"),
    "other-rsa-key": _foreign_rsa(),
    "alg-none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(_claims())}.",
    "tampered": _tampered(),
}


def assert_problem(response: object, status: int, slug: str, *secrets: str) -> None:
    from httpx2 import Response

    assert isinstance(response, Response)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM_JSON
    assert response.json()["type"] == f"https://aiservice.dev/problems/{slug}"
    for secret in secrets:
        assert secret not in response.text
        assert all(secret not in value for value in response.headers.values())


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
@pytest.mark.parametrize("kind", BAD_TOKENS, ids=str)
def test_bad_credentials_are_401_on_every_endpoint(service: Service, kind: str, endpoint: Endpoint) -> None:
    token = BAD_TOKENS[kind]
    tenant = "globex" if kind == "tampered" else "acme"  # the tenant the tampered payload claims
    headers = {"X-Tenant-ID": tenant, **({"Authorization": f"Bearer {token}"} if token else {})}
    response = call(service.client, headers, endpoint, "ghost-model")
    assert_problem(response, 401, "unauthenticated", *([token] if token else []))
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
def test_tenant_header_that_does_not_match_is_403_on_every_endpoint(
    service: Service, endpoint: Endpoint
) -> None:
    headers = {**service.headers("acme"), "X-Tenant-ID": "globex"}
    response = call(service.client, headers, endpoint, "ghost-model")
    assert_problem(response, 403, "tenant-mismatch", headers["Authorization"].split()[1])


@pytest.fixture
def suspended(service: Service) -> Iterator[None]:
    response = service.client.patch(
        f"{API}/tenants/acme", json={"status": "suspended"}, headers=service.root()
    )
    assert response.status_code == 200, response.text
    yield
    service.client.patch(f"{API}/tenants/acme", json={"status": "active"}, headers=service.root())


@pytest.mark.parametrize("endpoint", ENDPOINTS, ids=str)
def test_suspended_tenant_is_403_on_every_endpoint(
    service: Service, suspended: None, endpoint: Endpoint
) -> None:
    response = call(service.client, service.headers("acme"), endpoint, "ghost-model")
    assert_problem(response, 403, "tenant-suspended")


# -- quotas ----------------------------------------------------------------------------------------

ZERO_QUOTAS = {
    "maxModels": 0,
    "maxVersionsPerModel": 0,
    "maxArtifactBytes": 0,
    "maxConcurrentTrainingJobs": 0,
    "maxLoadedModels": 0,
}
NO_QUOTAS = dict.fromkeys(ZERO_QUOTAS)


@pytest.fixture
def over_quota(service: Service) -> Iterator[dict[str, str]]:
    """Acme owns one model and has no room for anything more."""
    client, headers = service.client, service.headers("acme")
    client.post(f"{API}/models", json={"name": "full", "framework": "sklearn"}, headers=headers)
    client.post(f"{API}/datasets", files={"file": ("rows.csv", b"a,y\n1,0\n2,1\n")}, headers=headers)
    limited = client.patch(f"{API}/tenants/acme", json={"quotas": ZERO_QUOTAS}, headers=service.root())
    assert limited.status_code == 200, limited.text
    yield headers
    client.patch(f"{API}/tenants/acme", json={"quotas": NO_QUOTAS}, headers=service.root())
    client.delete(f"{API}/models/full", headers=headers)
    client.delete(f"{API}/datasets/rows", headers=headers)


def train_body(dataset: str) -> dict[str, object]:
    return {
        "trainingConfig": {"algorithm": "sklearn.linear_model.LogisticRegression"},
        "datasetConfig": {"trainPath": f"dataset://{dataset}", "format": "csv", "target": "y"},
    }


CREATING: dict[str, tuple[str, str]] = {
    "model": ("POST /models", "maxModels"),
    "version": ("POST /models/{model}/versions", "maxVersionsPerModel"),
    "training-job": ("POST /models/{model}/train", "maxConcurrentTrainingJobs"),
}


@pytest.mark.parametrize("what", CREATING)
def test_creating_past_a_quota_is_429_naming_it(
    service: Service, over_quota: dict[str, str], what: str
) -> None:
    route, quota = CREATING[what]
    (endpoint,) = [e for e in ENDPOINTS if str(e) == route]
    path = endpoint.path.format(model="full")
    if what == "version":
        response = service.client.post(
            path, files={"file": ("model.skops", iris_model_bytes())}, headers=over_quota
        )
    elif what == "training-job":
        response = service.client.post(path, json=train_body("rows"), headers=over_quota)
    else:
        response = service.client.post(
            path, json={"name": "one-more", "framework": "sklearn"}, headers=over_quota
        )
    assert_problem(response, 429, "quota-exceeded")
    assert (response.json()["quota"], response.json()["limit"]) == (quota, 0)
    assert service.client.get(f"{API}/models/full/versions", headers=over_quota).json()["items"] == []


# -- another tenant, by id and by name -------------------------------------------------------------


@dataclass
class Owned:
    model: dict[str, str]
    job: str
    key: str
    experiment: str


@pytest.fixture(scope="module")
def owned(service: Service) -> Iterator[Owned]:
    """Acme's model (a version, an alias, a logged prediction), dataset, training job and API key, made
    once for the tests below: each is refused, and checks afterwards that they are as they were."""
    client, headers = service.client, service.headers("acme")
    model = client.post(
        f"{API}/models", json={"name": "secret-model", "framework": "sklearn"}, headers=headers
    )
    assert model.status_code == 201, model.text
    version = client.post(
        f"{API}/models/secret-model/versions",
        files={"file": ("model.skops", iris_model_bytes())},
        headers=headers,
    )
    assert version.status_code == 201, version.text
    client.put(f"{API}/models/secret-model/aliases/champion", json={"version": 1}, headers=headers)
    dataset = client.post(
        f"{API}/datasets", files={"file": ("secret-data.csv", b"a,y\n1,0\n2,1\n")}, headers=headers
    )
    assert dataset.status_code == 201, dataset.text
    job = client.post(f"{API}/models/secret-model/train", json=train_body("secret-data"), headers=headers)
    assert job.status_code in (201, 202), job.text
    key = client.post(f"{API}/api-keys", json={"name": "ci", "roles": ["predictor"]}, headers=headers)
    assert key.status_code == 201, key.text
    logging = client.put(f"{API}/models/secret-model/payload-logging", json={}, headers=headers)
    assert logging.status_code == 200, logging.text
    predicted = client.post(
        f"{API}/models/secret-model/predict",
        json={"input": {"features": [5.1, 3.5, 1.4, 0.2]}},
        headers={**headers, "X-Request-ID": "secret-request"},
    )
    assert predicted.status_code == 200, predicted.text
    service.container.payload_logging.recorder.flush()  # a logged prediction, known by its request id
    arms = [{"name": "A", "version": 1}, {"name": "B", "alias": "champion"}]
    experiment = client.post(
        f"{API}/experiments", json={"name": "secret", "model": "secret-model", "arms": arms}, headers=headers
    )
    assert experiment.status_code == 201, experiment.text
    yield Owned(model.json(), job.json()["id"], key.json()["id"], experiment.json()["id"])
    client.delete(f"{API}/models/secret-model", headers=headers)
    client.delete(f"{API}/datasets/secret-data", headers=headers)
    client.delete(f"{API}/api-keys/{key.json()['id']}", headers=headers)


# Everything addressed by an object of a tenant (not the platform's /tenants).
ADDRESSED = [e for e in ENDPOINTS if "{" in e.template and not e.template.startswith("/tenants")]


@pytest.mark.parametrize("by", ["id", "name"])
@pytest.mark.parametrize("endpoint", ADDRESSED, ids=str)
def test_other_tenant_gets_404_by_id_and_by_name_on_every_endpoint(
    service: Service, owned: Owned, by: str, endpoint: Endpoint
) -> None:
    model = owned.model[by]
    dataset = model if endpoint.template.startswith("/v2/") else "secret-data"  # v2 names models
    ids = {"model": model, "reference": f"{model}:1", "name": dataset, "job": owned.job, "key_id": owned.key}
    ids["request_id"] = "secret-request"  # acme's logged prediction
    ids["experiment_id"] = owned.experiment
    ids["webhook_id"] = "0" * 32  # tests/webhooks proves another tenant's real webhook is a 404 too
    ids["study"] = "0" * 36  # tests/automl proves another tenant's real AutoML study is a 404 too
    path = endpoint.path.format(version=1, alias="champion", **ids)
    intruder = service.headers("globex", ("admin",))
    if endpoint.body == "upload":
        response = service.client.post(
            path, files={"file": ("m.skops", iris_model_bytes())}, headers=intruder
        )
    else:
        response = service.client.request(endpoint.method, path, json=endpoint.body, headers=intruder)
    assert_problem(response, 404, "not-found")
    owner = service.headers("acme")
    after = service.client.get(f"{API}/models/secret-model", headers=owner).json()
    assert (after["description"], after["latestVersion"], after["aliases"]) == ("", 1, {"champion": 1})
    assert service.client.get(f"{API}/training-jobs/{owned.job}", headers=owner).status_code == 200
    keys = service.client.get(f"{API}/api-keys", headers=owner).json()["items"]
    assert [k["id"] for k in keys if not k.get("revokedAt")] == [owned.key]
    assert service.client.get(f"{API}/datasets/secret-data", headers=owner).status_code == 200
