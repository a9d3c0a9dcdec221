"""A training target's values judged against the classes its model declares, when the job is submitted.

Values that are declared classes train as they are. The integers 0..K-1 (or some of them), where the model
declares K class names, are a label-encoded target: the job records a positional mapping and trains on
the names. Anything else is refused, naming the file's target and its first ``SHOWN`` unknown values; so
is a training file that lacks a declared class (the job would fail on it). Values compare as text, as the
worker compares them. Files read only in part (``TargetValues.complete`` False) are judged by their first
rows, and not asked for every class.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from aiservice.domain.errors import FieldError
from aiservice.domain.training import (
    LabelMapping,
    TargetValues,
    integer_label,
    missing_classes,
    position_mapping,
    unknown_labels,
)

FIELD = "datasetConfig.target"
SHOWN = 10  # labels a refusal lists; it says how many there are in all


def judge_labels(
    classes: Sequence[Any], where: str, scans: list[tuple[str, TargetValues]]
) -> tuple[LabelMapping | None, list[FieldError]]:
    """The mapping the job records (None: the values are the classes) and the problems, one per file;
    ``scans`` pairs each path's request field (``trainPath``) with its values."""
    mapping = position_mapping((value for _, scan in scans for value in scan.values), classes)
    errors: list[FieldError] = []
    for name, scan in scans:
        unknown = unknown_labels(scan.values, classes, mapping)
        missing = missing_classes(scan.values, classes, mapping) if scan.complete else []
        if unknown:
            errors.append(FieldError(FIELD, _unknown(name, scan, unknown, classes, where)))
        elif name == "trainPath" and missing:
            errors.append(
                FieldError(
                    FIELD,
                    f"{name}: no label in {scan.column} stands for {_shown(missing)}, of the "
                    f"{len(classes)} classes {where} declares; the training data must show every one",
                )
            )
    return mapping, errors


def _unknown(name: str, scan: TargetValues, unknown: list[Any], classes: Sequence[Any], where: str) -> str:
    first_rows = "" if scan.complete else f" (its first {scan.rows:,} rows)"
    message = (
        f"{name}: labels in {scan.column}{first_rows} that {where} does not declare: {_shown(unknown)}; "
        f"declared: {_shown(classes)}"
    )
    if all(integer_label(label) is None for label in classes):
        message += f" (integer labels 0..{len(classes) - 1} in every file are read as these, by position)"
    return message


def _shown(values: Sequence[Any]) -> str:
    """At most ``SHOWN`` values, and how many there are when that is not all."""
    text = ", ".join(str(value) for value in values[:SHOWN])
    return text if len(values) <= SHOWN else f"{text}, ... ({len(values)} in all)"
