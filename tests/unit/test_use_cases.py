"""Use cases over in-memory ports: rules that hold whatever the backend."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from aiservice.application.frameworks import FrameworkCatalog
from aiservice.application.outbox import EventBus, OutboxRelay
from aiservice.application.ports import ModelQuery, OutboxMessage, TokenClaims
from aiservice.application.registry import ModelRegistry, NewModel
from aiservice.application.security import TokenAuthenticator
from aiservice.application.tenants import Tenants
from aiservice.application.versions import ModelVersions, VersionMetadata, safe_filename
from aiservice.domain.errors import (
    Conflict,
    Forbidden,
    InvalidArtifact,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    Unauthenticated,
    UntrustedArtifact,
)
from aiservice.domain.models import Framework, Stage
from aiservice.domain.tenancy import Principal, Role
from tests.fakes import FakeInspector, InMemoryArtifactStore, InMemoryUnitOfWorkFactory

NOW = datetime(2026, 1, 1, tzinfo=UTC)
EDITOR = Principal("ed", "acme", frozenset({Role.EDITOR}))
VIEWER = Principal("vi", "acme", frozenset({Role.VIEWER}))
OTHER = Principal("ot", "globex", frozenset({Role.ADMIN}))
FRAMEWORKS = FrameworkCatalog.of("onnx", "sklearn")


@pytest.fixture
def uow() -> InMemoryUnitOfWorkFactory:
    return InMemoryUnitOfWorkFactory()


@pytest.fixture
def store() -> InMemoryArtifactStore:
    return InMemoryArtifactStore()


@pytest.fixture
def registry(uow: InMemoryUnitOfWorkFactory) -> ModelRegistry:
    return ModelRegistry(uow, lambda: NOW, FRAMEWORKS)


@pytest.fixture
def inspector() -> FakeInspector:
    return FakeInspector()


@pytest.fixture
def versions(
    uow: InMemoryUnitOfWorkFactory, store: InMemoryArtifactStore, inspector: FakeInspector
) -> ModelVersions:
    return ModelVersions(uow, store, lambda: NOW, max_artifact_bytes=100, inspector=inspector)


def add_version(versions: ModelVersions, data: bytes = b"bytes", who: Principal = EDITOR) -> int:
    upload = versions.start_upload(who, "m")
    upload.write(data)
    return versions.finish_upload(upload, "f.bin", VersionMetadata()).version


def test_duplicate_name_conflict_carries_the_existing_id(registry: ModelRegistry) -> None:
    first = registry.create_model(EDITOR, NewModel("m", Framework.ONNX))
    with pytest.raises(Conflict) as raised:
        registry.create_model(EDITOR, NewModel("m", Framework("sklearn")))
    assert raised.value.extra == {"existingId": first.id}


def test_a_framework_no_plugin_provides_is_refused_naming_the_installed_ones(
    registry: ModelRegistry, uow: InMemoryUnitOfWorkFactory
) -> None:
    with pytest.raises(InvalidInput) as refused:
        registry.create_model(EDITOR, NewModel("m", "lightgbm"))  # not in this catalog
    assert [e.field for e in refused.value.errors] == ["body.framework"]
    assert "onnx, sklearn" in refused.value.errors[0].message
    assert uow.db.models == {}


def test_a_framework_name_becomes_the_models_framework(registry: ModelRegistry) -> None:
    model = registry.create_model(EDITOR, NewModel("m", "sklearn"))
    assert (model.framework, type(model.framework)) == ("sklearn", Framework)


def test_viewer_cannot_create(registry: ModelRegistry, uow: InMemoryUnitOfWorkFactory) -> None:
    with pytest.raises(Forbidden):
        registry.create_model(VIEWER, NewModel("m", Framework.ONNX))
    assert uow.db.models == {}


def test_other_tenant_cannot_see_the_model(registry: ModelRegistry) -> None:
    model = registry.create_model(EDITOR, NewModel("m", Framework.ONNX))
    with pytest.raises(NotFound):
        registry.get_model(OTHER, model.id)
    assert registry.list_models(OTHER, ModelQuery()).items == []


def test_no_op_update_commits_nothing(registry: ModelRegistry, uow: InMemoryUnitOfWorkFactory) -> None:
    registry.create_model(EDITOR, NewModel("m", Framework.ONNX, tags=["a"]))
    events = len(uow.db.outbox)
    registry.update_model(EDITOR, "m", {"tags": ["a", "a"]})
    assert len(uow.db.outbox) == events


def test_versions_number_from_one(versions: ModelVersions, registry: ModelRegistry) -> None:
    registry.create_model(EDITOR, NewModel("m", Framework.ONNX))
    assert [add_version(versions) for _ in range(3)] == [1, 2, 3]


def test_failed_record_removes_the_stored_bytes(
    versions: ModelVersions, registry: ModelRegistry, store: InMemoryArtifactStore
) -> None:
    registry.create_model(EDITOR, NewModel("m", Framework.ONNX))
    upload = versions.start_upload(EDITOR, "m")
    upload.write(b"abc")
    registry.delete_model(Principal("adm", "acme", frozenset({Role.ADMIN})), "m")
    with pytest.raises(NotFound):
        versions.finish_upload(upload, "f", VersionMetadata())
    assert store.blobs == {}


def test_oversize_write_is_refused(versions: ModelVersions, registry: ModelRegistry) -> None:
    registry.create_model(EDITOR, NewModel("m", Framework.ONNX))
    upload = versions.start_upload(EDITOR, "m")
    with pytest.raises(PayloadTooLarge):
        upload.write(b"x" * 101)


def test_viewer_cannot_start_an_upload(versions: ModelVersions, registry: ModelRegistry) -> None:
    registry.create_model(EDITOR, NewModel("m", Framework.ONNX))
    with pytest.raises(Forbidden):
        versions.start_upload(VIEWER, "m")


def test_second_production_needs_archive_existing(versions: ModelVersions, registry: ModelRegistry) -> None:
    registry.create_model(EDITOR, NewModel("m", Framework.ONNX))
    add_version(versions)
    add_version(versions)
    deployer = Principal("de", "acme", frozenset({Role.DEPLOYER}))
    versions.set_stage(deployer, "m", 1, Stage.PRODUCTION, archive_existing=False)
    with pytest.raises(Conflict):
        versions.set_stage(deployer, "m", 2, Stage.PRODUCTION, archive_existing=False)
    versions.set_stage(deployer, "m", 2, Stage.PRODUCTION, archive_existing=True)
    assert versions.get_version(EDITOR, "m", 1).stage == Stage.ARCHIVED
    assert versions.resolve(EDITOR, "m")[1].version == 2


def test_resolving_a_model_without_versions_is_not_found(
    versions: ModelVersions, registry: ModelRegistry
) -> None:
    registry.create_model(EDITOR, NewModel("m", Framework.ONNX))
    with pytest.raises(NotFound):
        versions.resolve(EDITOR, "m")
    with pytest.raises(NotFound):
        versions.resolve(EDITOR, "m@staging")


def test_open_artifact_gives_back_the_uploaded_bytes(
    versions: ModelVersions, registry: ModelRegistry
) -> None:
    registry.create_model(EDITOR, NewModel("m", Framework.ONNX))
    add_version(versions, b"payload")
    version, handle = versions.open_artifact(VIEWER, "m", 1)
    assert handle.read() == b"payload"
    assert version.artifact.size_bytes == 7


def test_refused_artifact_leaves_no_version_and_no_bytes(
    versions: ModelVersions, registry: ModelRegistry, store: InMemoryArtifactStore, inspector: FakeInspector
) -> None:
    registry.create_model(EDITOR, NewModel("m", Framework("sklearn")))
    inspector.error = UntrustedArtifact("pickle refused")
    with pytest.raises(UntrustedArtifact):
        add_version(versions)
    assert store.blobs == {}
    assert versions.list_versions(EDITOR, "m", 10, None).items == []


def test_schema_that_disagrees_with_the_artifact_is_refused(
    versions: ModelVersions, registry: ModelRegistry, store: InMemoryArtifactStore
) -> None:
    features = [{"name": f"f{i}", "type": "number"} for i in range(3)]
    registry.create_model(
        EDITOR,
        NewModel(
            "m",
            Framework("sklearn"),
            input_schema={"type": "tabular", "features": features},
            output_schema={"classes": ["a", "b"]},
        ),
    )
    with pytest.raises(InvalidArtifact) as refused:
        add_version(versions)
    assert {e.field for e in refused.value.errors} == {"inputSchema.features", "outputSchema.classes"}
    assert store.blobs == {}


def test_tenant_pickle_setting_reaches_the_loader(
    versions: ModelVersions, registry: ModelRegistry, uow: InMemoryUnitOfWorkFactory, inspector: FakeInspector
) -> None:
    tenants = Tenants(uow)
    tenants.ensure("acme")
    registry.create_model(EDITOR, NewModel("m", Framework("sklearn")))
    add_version(versions)
    tenants.configure("acme", allow_pickle=True)
    add_version(versions)
    assert [s.allow_pickle for s in inspector.seen] == [False, True]


@pytest.mark.parametrize(
    ("given", "safe"),
    [("../../etc/passwd", "passwd"), ("C:\\dir\\m.onnx", "m.onnx"), ("", "artifact"), (".hidden", "hidden")],
)
def test_filenames_lose_their_paths(given: str, safe: str) -> None:
    assert safe_filename(given) == safe


class FakeTokens:
    def __init__(self, claims: TokenClaims | None) -> None:
        self.claims = claims

    def issue(self, subject: str, tenant_id: str, roles: list[str], ttl_seconds: int) -> str:
        return "token"

    def verify(self, token: str) -> TokenClaims:
        if self.claims is None:
            raise Unauthenticated("bad")
        return self.claims


def test_authenticator_builds_a_principal_for_a_known_tenant(uow: InMemoryUnitOfWorkFactory) -> None:
    Tenants(uow).ensure("acme")
    claims = TokenClaims("alice", "acme", ("editor", "unknown-role"), NOW)
    principal = TokenAuthenticator(FakeTokens(claims), uow).authenticate("Bearer x", "acme")
    assert principal == Principal("alice", "acme", frozenset({Role.EDITOR}))


@pytest.mark.parametrize(
    ("authorization", "tenant", "error"),
    [
        (None, "acme", Unauthenticated),
        ("Token x", "acme", Unauthenticated),
        ("Bearer x", None, InvalidInput),
        ("Bearer x", "globex", Forbidden),
    ],
)
def test_authenticator_refusals(
    uow: InMemoryUnitOfWorkFactory, authorization: str | None, tenant: str | None, error: type[Exception]
) -> None:
    Tenants(uow).ensure("acme")
    authenticator = TokenAuthenticator(FakeTokens(TokenClaims("a", "acme", ("admin",), NOW)), uow)
    with pytest.raises(error):
        authenticator.authenticate(authorization, tenant)


def test_tenant_ids_are_validated(uow: InMemoryUnitOfWorkFactory) -> None:
    with pytest.raises(InvalidInput):
        Tenants(uow).ensure("Bad Tenant!")
    assert Tenants(uow).ensure("fine")[1] is True
    assert Tenants(uow).ensure("fine")[1] is False


class ListOutbox:
    def __init__(self, messages: list[OutboxMessage]) -> None:
        self.messages = messages
        self.published: list[int] = []
        self.failed: list[tuple[int, str]] = []

    def pending(self, limit: int) -> list[OutboxMessage]:
        return [m for m in self.messages if m.position not in self.published][:limit]

    def mark_published(self, positions: list[int]) -> None:
        self.published += positions

    def mark_failed(self, position: int, error: str) -> None:
        self.failed.append((position, error))


def _message(position: int, kind: str = "ModelCreated") -> OutboxMessage:
    return OutboxMessage(position, f"e{position}", kind, "acme", "model", "m", NOW, {})


def test_relay_stops_at_a_failure_and_keeps_order() -> None:
    outbox = ListOutbox([_message(1), _message(2, "Boom"), _message(3)])
    bus = EventBus()
    delivered: list[int] = []

    def handler(message: OutboxMessage) -> None:
        if message.event_type == "Boom" and not outbox.failed:
            raise RuntimeError("down")
        delivered.append(message.position)

    bus.subscribe("*", handler)
    relay = OutboxRelay(outbox, bus)  # type: ignore[arg-type]
    assert relay.run_once() == 1
    assert outbox.failed[0][0] == 2 and "down" in outbox.failed[0][1]
    assert relay.run_once() == 2
    assert delivered == [1, 2, 3]


def test_bus_routes_by_type_and_wildcard() -> None:
    bus = EventBus()
    got: dict[str, list[Any]] = {"typed": [], "all": []}
    bus.subscribe("ModelCreated", got["typed"].append)
    bus.subscribe("*", got["all"].append)
    bus.deliver(_message(1))
    bus.deliver(_message(2, "ModelDeleted"))
    assert [m.position for m in got["typed"]] == [1]
    assert [m.position for m in got["all"]] == [1, 2]
