"""Pure domain rules: names, references, permissions, model changes, cursors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from aiservice.domain.errors import Forbidden, InvalidInput
from aiservice.domain.events import ModelCreated, ModelDeleted, ModelUpdated
from aiservice.domain.models import Framework, Model, check_alias_name, check_model_name
from aiservice.domain.pagination import decode_cursor, encode_cursor
from aiservice.domain.references import ModelReference
from aiservice.domain.tenancy import Permission, Principal, Role

NOW = datetime(2026, 1, 1, tzinfo=UTC)


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


def test_roles_grant_permissions_as_data() -> None:
    viewer = Principal("v", "t", frozenset({Role.VIEWER}))
    editor = Principal("e", "t", frozenset({Role.EDITOR}))
    admin = Principal("a", "t", frozenset({Role.ADMIN}))
    assert viewer.permissions == {Permission.MODEL_READ}
    assert Permission.MODEL_DELETE not in editor.permissions
    assert admin.permissions == set(Permission)
    with pytest.raises(Forbidden):
        viewer.require(Permission.MODEL_WRITE)
    editor.require(Permission.VERSION_WRITE)


def test_roles_combine() -> None:
    both = Principal("x", "t", frozenset({Role.VIEWER, Role.EDITOR}))
    assert Permission.ALIAS_WRITE in both.permissions


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
