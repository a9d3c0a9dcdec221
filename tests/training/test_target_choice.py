"""A request that names no target gets one from the data's columns and the model's schemas, by a rule the
job records; when no rule names exactly one column, the request is refused listing the columns."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiservice.application.training_data import TARGET_FIELD, TargetChoice, choose_target
from aiservice.domain.errors import FieldError
from aiservice.domain.models import Framework, Model


def model(**schemas: Any) -> Model:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    return Model(
        tenant_id="acme", name="m", framework=Framework("sklearn"), created_at=now, updated_at=now, **schemas
    )


def tabular(*names: str) -> dict[str, Any]:
    return {"type": "tabular", "features": [{"name": name, "type": "number"} for name in names]}


def chosen(choice: TargetChoice | FieldError) -> str:
    assert isinstance(choice, TargetChoice), choice
    return choice.column


def test_the_one_conventionally_named_column_is_the_target() -> None:
    choice = choose_target(["sepal", "petal", "label"], model(), None)
    assert chosen(choice) == "label"
    assert isinstance(choice, TargetChoice)
    assert "'label' is the one column named label, target, class or y" in choice.because


def test_conventional_names_match_in_any_case() -> None:
    assert chosen(choose_target(["a", "b", "Class"], model(), None)) == "Class"


def test_the_output_schema_names_the_target_first() -> None:
    choice = choose_target(["a", "species", "label"], model(output_schema={"target": "species"}), None)
    assert chosen(choice) == "species"
    assert isinstance(choice, TargetChoice)
    assert "outputSchema.target" in choice.because


def test_an_output_schema_name_that_is_no_column_is_passed_over() -> None:
    assert chosen(choose_target(["a", "y"], model(output_schema={"name": "prediction"}), None)) == "y"


def test_the_one_column_the_input_schema_does_not_declare_is_the_target() -> None:
    choice = choose_target(["f1", "f2", "species"], model(input_schema=tabular("f1", "f2")), None)
    assert chosen(choice) == "species"
    assert isinstance(choice, TargetChoice)
    assert "model's inputSchema does not name as a feature" in choice.because


def test_the_requests_features_are_never_the_target() -> None:
    assert chosen(choose_target(["class", "y"], model(), ["class"])) == "y"


def test_a_declared_feature_named_like_a_label_is_not_the_target() -> None:
    assert (
        chosen(choose_target(["class", "f2", "kind"], model(input_schema=tabular("class", "f2")), None))
        == "kind"
    )


def test_two_conventional_names_are_refused_naming_both_and_listing_the_columns() -> None:
    refusal = choose_target(["a", "label", "target"], model(), None)
    assert refusal == FieldError(
        TARGET_FIELD,
        "name the label column: the request names none and 'label' and 'target' could each be the label; "
        "the training data's columns: a, label, target",
    )


def test_no_rule_naming_a_column_is_refused_listing_the_columns() -> None:
    refusal = choose_target(["a", "b", "species"], model(), None)
    assert isinstance(refusal, FieldError)
    assert refusal.field == TARGET_FIELD
    assert "no column is named label, target, class or y" in refusal.message
    assert refusal.message.endswith("columns: a, b, species")
