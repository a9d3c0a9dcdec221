"""One service for the whole zoo (SQLite: the zoo is about answers, not storage), on a real socket for
tritonclient; every request goes to that socket, so one event loop serves (and batches for) all the
paths. Each model is built and registered on first use: version 1 stays in its native form,
version 2 is compiled to ONNX, and the compilation's report is kept."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from aiservice.bootstrap import Container, bootstrap
from aiservice.infrastructure.db import migrate
from aiservice.infrastructure.db.engine import create_engine
from aiservice.interfaces.http.app import create_app
from tests.conftest import make_settings
from tests.helpers import serve_in_thread
from tests.zoo.catalog import BUILDERS, ZooModel

API = "/api/v1/ai/models"
NATIVE, COMPILED = 1, 2


@dataclass
class Registered:
    zoo: ZooModel
    compilation: dict[str, Any]  # version 2's serving record after its compilation


@dataclass
class Zoo:
    client: httpx.Client
    container: Container
    address: str
    headers: dict[str, str]
    registered: dict[str, Registered] = field(default_factory=dict)

    def get(self, name: str) -> Registered:
        if name not in self.registered:
            self.registered[name] = self._register(BUILDERS[name]())
        return self.registered[name]

    def _register(self, zoo: ZooModel) -> Registered:
        body = {"name": zoo.name, "framework": zoo.framework, **zoo.model}
        created = self.client.post(API, json=body, headers=self.headers)
        assert created.status_code == 201, created.text
        for _ in (NATIVE, COMPILED):
            response = self.client.post(
                f"{API}/{zoo.name}/versions",
                files={"file": (zoo.filename, zoo.artifact, "application/octet-stream")},
                headers=self.headers,
            )
            assert response.status_code == 201, response.text
        report = self.container.compilation.compile_version("acme", created.json()["id"], COMPILED)
        version = self.client.get(f"{API}/{zoo.name}/versions/{COMPILED}", headers=self.headers).json()
        return Registered(zoo, version["serving"] if report is not None else {})


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Zoo]:
    folder: Path = tmp_path_factory.mktemp("zoo")
    url = f"sqlite:///{folder / 'zoo.db'}"
    engine = create_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    container = bootstrap(make_settings(url, folder / "data"))
    container.tenants.ensure("acme")
    token = container.tokens.issue("zookeeper", "acme", ["admin"], 3600)
    headers = {"Authorization": f"Bearer {token}", "X-Tenant-ID": "acme"}
    try:
        # The test client runs the app's start-up and shut-down; requests go to the live socket.
        with TestClient(create_app(container)), serve_in_thread(container) as address:
            with httpx.Client(base_url=f"http://{address}", timeout=120) as client:
                yield Zoo(client, container, address, headers)
    finally:
        container.close()
