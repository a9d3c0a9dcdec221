"""The worker side of one AutoML trial (ADR 28): a training job whose ``training.automlTrial`` is set.

It cross-validates the trial's estimator on the study's training part, reports the running mean after
each fold as the job's progress (the study's pruner reads those and cancels the job when the trial is
hopeless) and hands back the score. It runs wherever training jobs run: a local worker process, or a
Ray task when the Ray runner is configured, so a study's trials run in parallel as jobs do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from aiservice.domain.training import DatasetConfig
from aiservice.infrastructure.automl.data import study_data, study_folds
from aiservice.infrastructure.automl.search import METRICS, shown, trial_estimator


def run_trial(request: dict[str, Any], send: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    from sklearn.base import clone
    from sklearn.metrics import get_scorer

    training = request["training"]
    trial = training["automlTrial"]
    task, metric, seed = trial["task"], trial["metric"], int(training.get("seed", 0))
    options: dict[str, Any] = request.get("storageOptions", {})
    dataset = DatasetConfig.from_json(request["dataset"])
    train, _ = study_data(dataset, task, seed, lambda uri: options.get(uri, {}))
    folds = study_folds(train.y, task, int(trial.get("cvFolds", 3)), seed)
    model = trial_estimator(training["algorithm"], task, training.get("params", {}), seed)
    scorer_name, greater_is_better = METRICS[task][metric]
    scorer = get_scorer(scorer_name)
    scores: list[float] = []
    for step, (fit_rows, score_rows) in enumerate(folds, start=1):
        fitted = clone(model).fit(train.X[fit_rows], train.y[fit_rows])
        scores.append(float(scorer(fitted, train.X[score_rows], train.y[score_rows])))
        send(
            {
                "type": "progress",
                "epoch": 1,
                "epochs": 1,
                "step": step,
                "steps": len(folds),
                "metrics": {metric: shown(float(np.mean(scores)), greater_is_better)},
            }
        )
    return {
        "score": shown(float(np.mean(scores)), greater_is_better),
        "folds": [shown(s, greater_is_better) for s in scores],
    }
