"""What a network's outputs mean when the artifact cannot say: the model's configuration decides."""

from __future__ import annotations

from typing import Any

from aiservice.domain.signature import Task


def declared_task(configuration: dict[str, Any], width: int | None) -> Task:
    """``configuration.task`` or ``classes`` decide; otherwise one output column is a regression."""
    if configuration.get("task") == "classification" or configuration.get("classes"):
        return "classification"
    if configuration.get("task") in ("regression", "other"):
        task: Task = configuration["task"]
        return task
    return "regression" if width == 1 else "other"
