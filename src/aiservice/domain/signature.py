"""What a loaded model takes and gives, as its runtime reports it; stored on each version."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Task = Literal["classification", "regression", "other"]


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
class Signature:
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...] = ()
    task: Task = "other"
    classes: tuple[Any, ...] | None = None  # the model's own labels, in probability column order
    feature_names: tuple[str, ...] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n_features(self) -> int | None:
        """Columns of a single 2-D input, when the model has one."""
        if len(self.inputs) == 1 and len(self.inputs[0].shape) == 2 and self.inputs[0].shape[1] > 0:
            return self.inputs[0].shape[1]
        return None

    def to_json(self) -> dict[str, Any]:
        return {
            "inputs": [t.to_json() for t in self.inputs],
            "outputs": [t.to_json() for t in self.outputs],
            "task": self.task,
            "classes": list(self.classes) if self.classes is not None else None,
            "featureNames": list(self.feature_names) if self.feature_names is not None else None,
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Signature:
        return cls(
            inputs=tuple(TensorSpec.from_json(t) for t in data["inputs"]),
            outputs=tuple(TensorSpec.from_json(t) for t in data.get("outputs", [])),
            task=data.get("task", "other"),
            classes=tuple(data["classes"]) if data.get("classes") is not None else None,
            feature_names=tuple(data["featureNames"]) if data.get("featureNames") is not None else None,
            extra=data.get("extra", {}),
        )
