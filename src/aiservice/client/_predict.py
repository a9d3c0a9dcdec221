"""Predictions, transport-free: inputs (dicts, rows, numpy arrays, pandas frames) as the service's JSON,
batches cut into chunks, and answers back as ``Prediction`` objects or a DataFrame on the input's index.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from aiservice.client._core import Call, Reply, api
from aiservice.client.errors import ProblemError, problem_error
from aiservice.client.types import Prediction

Outcome = Prediction | ProblemError


def plain(value: Any) -> Any:
    """JSON-ready: numpy scalars and arrays as Python values, NaN and pandas' NA as null."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if hasattr(value, "tolist") and hasattr(value, "dtype"):  # a numpy array or scalar
        return plain(value.tolist())
    if isinstance(value, float) and math.isnan(value):
        return None
    if type(value).__name__ in ("NAType", "NaTType"):
        return None
    return value


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) or (hasattr(value, "dtype") and getattr(value, "ndim", 1) == 0)


def is_frame(value: Any) -> bool:
    return type(value).__name__ == "DataFrame" and hasattr(value, "to_dict") and hasattr(value, "index")


def _is_series(value: Any) -> bool:
    return type(value).__name__ == "Series" and hasattr(value, "to_dict")


def one_input(value: Any) -> dict[str, Any]:
    """One input: a mapping of named features, a pandas Series, or a flat row of numbers (``features``)."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if _is_series(value):
        return {str(k): plain(v) for k, v in value.to_dict().items()}
    row = plain(value)
    if isinstance(row, list):
        return {"features": row}
    raise TypeError(f"cannot send a {type(value).__name__} as one input: give a dict or a row of numbers")


def many_inputs(values: Any) -> list[dict[str, Any]]:
    """Many inputs: a DataFrame's rows (by column name), a 2-D array's rows, or an iterable of inputs."""
    if is_frame(values):
        return [one_input(record) for record in values.to_dict(orient="records")]
    if hasattr(values, "ndim") and getattr(values, "ndim", 0) == 2:
        return [{"features": row} for row in plain(values)]
    if isinstance(values, Mapping) or isinstance(values, str | bytes):
        raise TypeError("give many inputs as a DataFrame, a 2-D array or a list of inputs")
    return [one_input(v) for v in values]


def options_json(version: int | None, alias: str | None, options: Mapping[str, Any]) -> dict[str, Any]:
    """Predict options in the service's camelCase: ``include_confidence=True`` -> ``includeConfidence``."""
    body: dict[str, Any] = {_camel(k): v for k, v in options.items() if v is not None}
    if version is not None:
        body["version"] = version
    if alias is not None:
        body["alias"] = alias
    return body


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def predict_call(
    model: str, value: Any, options: Mapping[str, Any], headers: Mapping[str, str] | None = None
) -> Call[Prediction]:
    return Call(
        "POST",
        api("models", model, "predict"),
        lambda reply: Prediction.from_json(reply.json()),
        json={"input": one_input(value), "options": dict(options)},
        headers=headers,
    )


def _outcomes(reply: Reply) -> list[Outcome]:
    outcomes: list[Outcome] = []
    for output in reply.json()["outputs"]:
        if "error" in output:
            problem = output["error"]
            outcomes.append(problem_error(int(problem.get("status", 422)), {}, problem))
        else:
            outcomes.append(Prediction.from_json(output))
    return outcomes


def batch_calls(
    model: str, inputs: Sequence[dict[str, Any]], chunk_size: int, options: Mapping[str, Any]
) -> list[Call[list[Outcome]]]:
    """One ``batch-predict`` call per chunk of at most ``chunk_size`` inputs, in order."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    path = api("models", model, "batch-predict")
    return [
        Call(
            "POST",
            path,
            _outcomes,
            json={"inputs": list(inputs[i : i + chunk_size]), "options": dict(options)},
        )
        for i in range(0, len(inputs), chunk_size)
    ]


def settle(outcomes: Iterable[Outcome], raise_errors: bool) -> list[Outcome]:
    """The outcomes in order; with ``raise_errors`` the first failed input is raised (its position told)."""
    settled = list(outcomes)
    if raise_errors:
        for position, outcome in enumerate(settled):
            if isinstance(outcome, ProblemError):
                outcome.args = (f"input {position}: {outcome.args[0]}",)
                raise outcome
    return settled


def frame_of(outcomes: Sequence[Outcome], like: Any) -> Any:
    """A DataFrame on ``like``'s index: ``prediction``, and ``confidence`` and one ``probability_<class>``
    column per class when the service sent them; a failed row holds its problem in ``error``."""
    import pandas as pd

    rows: list[dict[str, Any]] = []
    for outcome in outcomes:
        if isinstance(outcome, ProblemError):
            rows.append({"prediction": None, "error": outcome.detail})
            continue
        row: dict[str, Any] = {"prediction": outcome.prediction}
        if outcome.confidence is not None:
            row["confidence"] = outcome.confidence
        for label, probability in (outcome.probabilities or {}).items():
            row[f"probability_{label}"] = probability
        rows.append(row)
    return pd.DataFrame(rows, index=like.index)
