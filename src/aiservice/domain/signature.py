"""What a loaded model takes and gives, as its runtime reports it; stored on each version."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Task = Literal["classification", "regression", "other"]
ColumnType = Literal["number", "integer", "boolean", "category", "string"]
COLUMN_TYPES: tuple[ColumnType, ...] = ("number", "integer", "boolean", "category", "string")
RAW_TYPES = frozenset({"category", "string"})  # columns the model reads as the value itself, not a number


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str  # numpy dtype name: float32, int64, bool, object (strings)
    shape: tuple[int, ...]  # -1 where any size is accepted

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TensorSpec:
        return cls(name=data["name"], dtype=data["dtype"], shape=tuple(data["shape"]))


@dataclass(frozen=True)
class Column:
    """One tabular column a model takes, in the model's own order.

    ``type`` says how the model reads it: ``category`` and ``string`` columns take the value itself
    (a DataFrame column of text), the others a number. ``values`` are the categories the model knows,
    when it says (a fitted encoder's). ``nullable`` is what a trial call at upload found: the model
    answers, with finite outputs, when this column is missing (NaN)."""

    name: str | None  # None: the model does not name its columns
    type: ColumnType = "number"
    values: tuple[Any, ...] | None = None
    nullable: bool = False

    @property
    def raw(self) -> bool:
        return self.type in RAW_TYPES

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "type": self.type, "nullable": self.nullable}
        if self.values is not None:
            data["values"] = list(self.values)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Column:
        values = data.get("values")
        return cls(
            name=data.get("name"),
            type=data.get("type", "number"),
            values=tuple(values) if values is not None else None,
            nullable=bool(data.get("nullable", False)),
        )


@dataclass(frozen=True)
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...] = ()
    task: Task = "other"
    classes: tuple[Any, ...] | None = None  # the model's own labels, in probability column order
    feature_names: tuple[str, ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # The tabular columns the model takes, in its order (one per feature), when it takes a table.
    columns: tuple[Column, ...] | None = None

    def __post_init__(self) -> None:
        if self.feature_names is None and self.columns and all(c.name for c in self.columns):
            object.__setattr__(self, "feature_names", tuple(str(c.name) for c in self.columns))

    @property
    def n_features(self) -> int | None:
        """Columns of a single 2-D input, or the number of tabular columns, when the model has them."""
        if self.columns:
            return len(self.columns)
        if len(self.inputs) == 1 and len(self.inputs[0].shape) == 2 and self.inputs[0].shape[1] > 0:
            return self.inputs[0].shape[1]
        return None

    @property
    def named_columns(self) -> bool:
        return bool(self.columns) and all(c.name for c in self.columns or ())

    def to_json(self) -> dict[str, Any]:
        data = {
            "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
            "task": self.task,
            "classes": list(self.classes) if self.classes is not None else None,
            "featureNames": list(self.feature_names) if self.feature_names is not None else None,
            "extra": self.extra,
        }
        if self.columns is not None:
            data["columns"] = [c.to_json() for c in self.columns]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Signature:
        columns = data.get("columns")
        return cls(
            inputs=tuple(TensorSpec.from_json(t) for t in data["inputs"]),
            outputs=tuple(TensorSpec.from_json(t) for t in data.get("outputs", [])),
            task=data.get("task", "other"),
            classes=tuple(data["classes"]) if data.get("classes") is not None else None,
            feature_names=tuple(data["featureNames"]) if data.get("featureNames") is not None else None,
            extra=data.get("extra", {}),
            columns=tuple(Column.from_json(c) for c in columns) if columns is not None else None,
        )
