"""The SDK's models against a live service: create, read, change, delete, listings that follow the keyset
cursors page after page, and problems raised as typed exceptions that carry the problem document."""

from __future__ import annotations

from typing import Any

import pytest

from aiservice.client import (
    AuthenticationError,
    ConflictError,
    Model,
    NotFoundError,
    PermissionDeniedError,
    ProblemError,
    ValidationError,
)
from tests.client.conftest import Connect


def test_a_model_is_created_read_changed_and_deleted(sdk: Any) -> None:
    created = sdk.models.create("churn", "sklearn", description="first", tags=["tabular"], category="risk")
    assert isinstance(created, Model)
    assert (created.name, created.framework, created.tags, created.latest_version) == (
        "churn",
        "sklearn",
        ("tabular",),
        None,
    )
    assert sdk.models.get("churn").id == created.id
    assert sdk.models.get(created.id).name == "churn"

    changed = sdk.models.update("churn", description="second", category=None)
    assert (changed.description, changed.category, changed.tags) == ("second", None, ("tabular",))

    sdk.models.delete("churn")
    with pytest.raises(NotFoundError):
        sdk.models.get("churn")


def test_a_model_reads_back_in_a_short_repr(sdk: Any) -> None:
    model = sdk.models.create("churn", "sklearn")
    assert repr(model).startswith(f"Model(id='{model.id}', name='churn', framework='sklearn'")
    assert "raw=" not in repr(model) and "created_at" not in repr(model)


def test_a_listing_follows_the_cursor_over_every_page(sdk: Any) -> None:
    names = [f"paged-{i}" for i in range(5)]
    for name in names:
        sdk.models.create(name, "sklearn", tags=["paged"])
    sdk.models.create("other", "sklearn")

    listed = list(sdk.models.list(tag="paged", sort="name", page_size=2))  # three pages
    assert [m.name for m in listed] == names


def test_a_taken_name_is_a_conflict_with_its_problem_document(sdk: Any) -> None:
    sdk.models.create("churn", "sklearn")
    with pytest.raises(ConflictError) as caught:
        sdk.models.create("churn", "sklearn")
    error = caught.value
    assert error.status == 409 and error.code == "conflict"
    assert error.type == "https://aiservice.dev/problems/conflict"
    assert "churn" in error.detail
    assert error.problem["status"] == 409


def test_invalid_input_is_a_validation_error_naming_each_field(sdk: Any) -> None:
    with pytest.raises(ValidationError) as caught:
        sdk.models.create("", "sklearn", tags=["t"] * 51)
    error = caught.value
    assert error.status == 422
    assert {"body.name", "body.tags"} <= set(error.fields)
    assert "body.name" in str(error)  # the message names the fields too


def test_a_refused_token_is_an_authentication_error(connect: Connect, service: str) -> None:
    stranger = connect(service, "not-a-token", "acme", retries=0)
    with pytest.raises(AuthenticationError) as caught:
        list(stranger.models.list())
    assert caught.value.status == 401


def test_a_viewer_cannot_create_a_model(connect: Connect, service: str, container: Any) -> None:
    viewer = connect(service, container.tokens.issue("viewer", "acme", ["viewer"], 600), "acme")
    with pytest.raises(PermissionDeniedError) as caught:
        viewer.models.create("churn", "sklearn")
    assert isinstance(caught.value, ProblemError) and caught.value.status == 403
