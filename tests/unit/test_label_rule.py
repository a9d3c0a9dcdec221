"""How a training target's values are read against the classes a model declares: as the classes, as
their positions (a label-encoded target), or not at all."""

from __future__ import annotations

from typing import Any

import pytest

from aiservice.domain.training import (
    DatasetConfig,
    LabelMapping,
    declared_classes,
    missing_classes,
    position_mapping,
    unknown_labels,
)

SPECIES = ["setosa", "versicolor", "virginica"]
BY_POSITION = LabelMapping("position", {"0": "setosa", "1": "versicolor", "2": "virginica"})


@pytest.mark.parametrize(
    "values",
    [
        [0, 1, 2],
        [0, 2],  # a subset: a validation file may lack a class
        ["0", "1", "2"],  # an npz's text labels or an image folder's names
    ],
)
def test_integers_below_the_class_count_map_names_by_position(values: list[Any]) -> None:
    assert position_mapping(values, SPECIES) == BY_POSITION


@pytest.mark.parametrize(
    ("values", "classes"),
    [
        (["setosa", "virginica"], SPECIES),  # the classes themselves
        ([0, 1, 2, 3], SPECIES),  # 3 is no position of three classes
        ([-1, 1], ["neg", "pos"]),
        ([0.0, 1.0, 2.0], SPECIES),  # floats are not label codes
        (["00", "01", "02"], SPECIES),  # nor is text that is not how an integer is written
        ([True, False], ["no", "yes"]),
        ([0, 1, "setosa"], SPECIES),  # a mixture: some files hold names, others codes
        ([0, 1, 2], [1, 2, 3]),  # integer classes: 1 could be a label or a position
        ([0, 1], ["1", "2"]),
        ([], SPECIES),
    ],
)
def test_anything_else_maps_nothing(values: list[Any], classes: list[Any]) -> None:
    assert position_mapping(values, classes) is None


def test_unknown_labels_compare_as_text_as_the_worker_does() -> None:
    assert unknown_labels([1, 2, 7], ["1", "2"], None) == [7]
    assert unknown_labels(["setosa", "rose", "iris"], SPECIES, None) == ["iris", "rose"]
    assert unknown_labels([0, 2, "setosa"], SPECIES, BY_POSITION) == ["setosa"]


def test_missing_classes_are_named_by_their_declared_label() -> None:
    assert missing_classes([0, 2], SPECIES, BY_POSITION) == ["versicolor"]
    assert missing_classes(["virginica"], SPECIES, None) == ["setosa", "versicolor"]


def test_the_output_schema_declares_classes_before_the_configuration() -> None:
    assert declared_classes({"classes": ["a", "b"]}, {"classes": ["x", "y"]}) == (
        ["a", "b"],
        "outputSchema.classes",
    )
    assert declared_classes({}, {"classes": ["x", "y"]}) == (["x", "y"], "configuration.classes")
    assert declared_classes({"classes": []}, {}) is None


def test_a_jobs_mapping_survives_its_stored_form() -> None:
    dataset = DatasetConfig(
        train_path="/data/iris.csv", format="csv", target="species", label_mapping=BY_POSITION
    )
    assert DatasetConfig.from_json(dataset.to_json()) == dataset
    plain = DatasetConfig(train_path="/data/iris.csv", format="csv", target="species")
    assert "labelMapping" not in plain.to_json()
