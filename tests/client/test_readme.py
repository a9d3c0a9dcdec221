"""The README's Python SDK example, run as written against a live service (with the names it leaves to
the reader: a token, a fitted estimator, a DataFrame, rows and an iris.csv in the working folder)."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pandas as pd
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from aiservice.bootstrap import Container

README = Path(__file__).resolve().parents[2] / "README.md"
FEATURES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
SPECIES = ["setosa", "versicolor", "virginica"]


def test_the_readme_sdk_example_runs(
    service: str, container: Container, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    block = re.search(
        r"<!-- sdk:start -->\s*```python\n(.*?)```\s*<!-- sdk:end -->", README.read_text(), re.S
    )
    assert block is not None, "README has no sdk block"
    x, y = load_iris(return_X_y=True)
    labels = [SPECIES[i] for i in y]
    frame = pd.DataFrame(x, columns=FEATURES)
    with (tmp_path / "iris.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([*FEATURES, "species"])
        writer.writerows([*row, label] for row, label in zip(x, labels, strict=True))
    monkeypatch.chdir(tmp_path)
    names = {
        "TOKEN": container.tokens.issue("reader", "default", ["admin"], 600),
        "estimator": LogisticRegression(max_iter=500).fit(frame, labels),
        "df": frame.iloc[:5],
        "rows": frame.iloc[:20].to_dict(orient="records"),
    }

    exec(block.group(1).replace("http://localhost:3004", service), names)

    client_module = names["Client"]
    with client_module(service, names["TOKEN"], "default") as client:
        assert [v.version for v in client.versions.list("iris")] == [2, 1]  # uploaded, then trained
