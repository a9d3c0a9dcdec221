"""Pure domain rules: names, references, permissions, model changes, cursors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from aiservice.domain.errors import Forbidden, InvalidInput, QuotaExceeded
from aiservice.domain.events import ModelCreated, ModelDeleted, ModelUpdated
from aiservice.domain.models import Framework, Model, check_alias_name, check_model_name
from aiservice.domain.pagination import decode_cursor, encode_cursor
from aiservice.domain.references import ModelReference
from aiservice.domain.tenancy import (
    PLATFORM_TENANT,
    Permission,
    Principal,
    Quota,
    Role,
    Tenant,
    parse_limits,
    parse_settings,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
INSTALLED = ("onnx", "sklearn", "pytorch")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("iris", ModelReference("iris")),
        ("iris:3", ModelReference("iris", version=3)),
        ("iris@champion", ModelReference("iris", alias="champion")),
        ("iris@production", ModelReference("iris", alias="production")),
        ("my.model-v2_x:12", ModelReference("my.model-v2_x", version=12)),
    ],
)
def test_reference_forms_parse(text: str, expected: ModelReference) -> None:
    assert ModelReference.parse(text) == expected


@pytest.mark.parametrize("text", ["", "iris:", "iris:0", "iris:-1", "iris:abc", "@alias", "iris@", ":3"])
def test_malformed_references_are_refused(text: str) -> None:
    with pytest.raises(InvalidInput):
        ModelReference.parse(text)


def test_uuid_references_are_ids() -> None:
    assert ModelReference("6f1c2f86-8c5e-4a38-a6a0-9c2e6e3e8f61").is_id
    assert not ModelReference("iris").is_id


@pytest.mark.parametrize("name", ["a", "Iris-2", "x.y_z", "A" * 128])
def test_valid_model_names(name: str) -> None:
    check_model_name(name)


@pytest.mark.parametrize(
    "name", ["", "-lead", "has space", "a@b", "a:b", "A" * 129, "6f1c2f86-8c5e-4a38-a6a0-9c2e6e3e8f61"]
)
def test_invalid_model_names(name: str) -> None:
    with pytest.raises(InvalidInput):
        check_model_name(name)


@pytest.mark.parametrize("alias", ["production", "staging", "latest", "none", "Upper", "1st", "a b"])
def test_reserved_or_malformed_aliases_are_refused(alias: str) -> None:
    with pytest.raises(InvalidInput):
        check_alias_name(alias)


def _principal(*roles: Role, tenant: str = "t") -> Principal:
    return Principal("someone", tenant, frozenset(roles))


def test_roles_grant_permissions_as_data() -> None:
    assert _principal(Role.VIEWER).permissions == {Permission.MODEL_READ}
    assert _principal(Role.PREDICTOR).permissions == {Permission.PREDICT}
    editor = _principal(Role.EDITOR).permissions
    assert {Permission.PREDICT, Permission.STAGE_WRITE, Permission.TRAIN} <= editor
    assert Permission.STAGE_PRODUCTION not in editor and Permission.MODEL_DELETE not in editor
    assert Permission.DEPLOY in editor and Permission.DEPLOY_PRODUCTION not in editor
    assert _principal(Role.DEPLOYER).permissions == editor | {
        Permission.STAGE_PRODUCTION,
        Permission.DEPLOY_PRODUCTION,
    }


def test_viewer_predicts_only_with_the_predictor_role_too() -> None:
    with pytest.raises(Forbidden) as refused:
        _principal(Role.VIEWER).require(Permission.PREDICT)
    assert refused.value.extra == {"permission": "model:predict"}
    _principal(Role.VIEWER, Role.PREDICTOR).require(Permission.PREDICT)


def test_admin_has_every_tenant_permission_but_no_platform_one() -> None:
    admin = _principal(Role.ADMIN).permissions
    assert admin == set(Permission) - {Permission.TENANTS_MANAGE}
    assert {Permission.MODEL_DELETE, Permission.TENANT_READ} <= admin


def test_superadmin_counts_only_in_a_platform_token() -> None:
    assert _principal(Role.SUPERADMIN, tenant=PLATFORM_TENANT).permissions == {Permission.TENANTS_MANAGE}
    assert (
        _principal(Role.SUPERADMIN, Role.ADMIN, tenant="acme").permissions
        == _principal(Role.ADMIN).permissions
    )
    assert _principal(Role.ADMIN, tenant=PLATFORM_TENANT).permissions == frozenset()


def test_roles_combine() -> None:
    both = Principal("x", "t", frozenset({Role.VIEWER, Role.EDITOR}))
    assert Permission.ALIAS_WRITE in both.permissions


def test_quota_refuses_the_write_past_its_limit_naming_limit_and_use() -> None:
    tenant = Tenant("acme", "Acme", quotas={Quota.MODELS: 2})
    tenant.check_quota(Quota.MODELS, current=1)
    with pytest.raises(QuotaExceeded) as refused:
        tenant.check_quota(Quota.MODELS, current=2)
    assert refused.value.extra == {"quota": "maxModels", "limit": 2, "current": 2, "requested": 1}
    tenant.check_quota(Quota.ARTIFACT_BYTES, current=10**12, adding=10**12)  # no limit: unlimited


def test_byte_quota_counts_what_the_write_adds() -> None:
    tenant = Tenant("acme", "Acme", quotas={Quota.ARTIFACT_BYTES: 100})
    tenant.check_quota(Quota.ARTIFACT_BYTES, current=60, adding=40)
    with pytest.raises(QuotaExceeded):
        tenant.check_quota(Quota.ARTIFACT_BYTES, current=60, adding=41)


def test_limits_parse_known_quotas_and_null_as_unlimited() -> None:
    assert parse_limits({"maxModels": 3, "maxDeployments": None}) == {
        Quota.MODELS: 3,
        Quota.DEPLOYMENTS: None,
    }
    tenant = Tenant("acme", "Acme", quotas={Quota.MODELS: 1, Quota.DEPLOYMENTS: 2})
    tenant.set_limits({Quota.MODELS: None, Quota.LOADED_MODELS: 4})
    assert tenant.quotas == {Quota.DEPLOYMENTS: 2, Quota.LOADED_MODELS: 4}


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"maxWidgets": 1}, "quotas.maxWidgets"),
        ({"maxModels": -1}, "quotas.maxModels"),
        ({"maxModels": True}, "quotas.maxModels"),
        ({"maxModels": 1.5}, "quotas.maxModels"),
    ],
)
def test_unknown_or_negative_quotas_are_refused(raw: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        parse_limits(raw)
    assert [e.field for e in refused.value.errors] == [field]


def test_tenant_refuses_frameworks_it_does_not_allow() -> None:
    tenant = Tenant(
        "acme", "Acme", settings=parse_settings({"allowedFrameworks": ["onnx", "sklearn"]}, INSTALLED)
    )
    tenant.check_framework("onnx")
    with pytest.raises(Forbidden) as refused:
        tenant.check_framework("pytorch")
    assert refused.value.code == "framework-not-allowed"
    assert refused.value.extra == {"framework": "pytorch", "allowedFrameworks": ["onnx", "sklearn"]}
    Tenant("open", "Open").check_framework("pytorch")  # no list: every framework


@pytest.mark.parametrize(
    "raw",
    [{"allowedFrameworks": ["cobol"]}, {"allowPickle": "yes"}, {"colour": "blue"}, {"allowedFrameworks": 3}],
)
def test_bad_tenant_settings_are_refused(raw: dict[str, object]) -> None:
    with pytest.raises(InvalidInput):
        parse_settings(raw, INSTALLED)


@pytest.mark.parametrize("name", ["", "SKLearn", "1torch", "x" * 21, "a b", "lightgbm; drop"])
def test_a_framework_name_that_cannot_be_stored_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="framework name"):
        Framework(name)


def test_a_framework_is_its_name() -> None:
    assert Framework("lightgbm") == "lightgbm" and Framework("lightgbm").value == "lightgbm"


def _model() -> Model:
    return Model.register(tenant_id="t", name="m", framework=Framework.ONNX, now=NOW)


def test_registering_a_model_raises_created_event() -> None:
    model = _model()
    assert [type(e) for e in model.events] == [ModelCreated]
    assert model.events[0].data() == {"name": "m", "framework": "onnx"}


def test_update_records_only_real_changes() -> None:
    model = _model()
    model.events.clear()
    later = NOW + timedelta(seconds=1)
    assert model.update({"description": "", "tags": []}, later) == []
    assert model.events == [] and model.updated_at == NOW
    assert model.update({"description": "new", "name": "ignored"}, later) == ["description"]
    assert model.name == "m" and model.updated_at == later
    assert isinstance(model.events[0], ModelUpdated)
    assert model.events[0].changed_fields == ["description"]


def test_delete_is_soft_and_evented() -> None:
    model = _model()
    model.delete(NOW)
    assert model.deleted_at == NOW
    assert isinstance(model.events[-1], ModelDeleted)


def test_cursor_round_trips_and_rejects_garbage() -> None:
    position = {"s": "name", "k": "abc", "id": "1"}
    assert decode_cursor(encode_cursor(position)) == position
    for garbage in ["%%%", "bm90IGpzb24", encode_cursor({"a": 1})[:-3] + "!!", "WzEsMl0"]:
        with pytest.raises(InvalidInput):
            decode_cursor(garbage)
