"""The AutoML search engine: a seeded Optuna study (TPE sampler, median pruner) over scikit-learn (and
XGBoost) estimators. Each trial is a training job of its own (``trial.run_trial``): a k-fold
cross-validation whose running mean after each fold is the job's progress, relayed to the pruner, which
cancels the job of a hopeless trial. Up to ``parallel`` trials run at once, as many as the job runner
runs (local worker processes, or Ray tasks).

The split (``data.study_data``: the ``validationPath``, else ``validationSplit`` (0.2) of the rows,
stratified for classification, seeded) and the folds are functions of the request alone, so every trial
job sees the same training part. The best trial is refitted on the whole training part, scored on the
held-out part next to a default random forest (the baseline), and saved by the framework's trainer, so
the artifact is the one a training job of that estimator would register.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from aiservice.application.automl import AutoMLRequest, SearchOutcome, SearchPlan, TrialJobs
from aiservice.domain.errors import FieldError
from aiservice.infrastructure.automl.data import study_data
from aiservice.infrastructure.datasets.readers import Table
from aiservice.infrastructure.training.metrics import classification_metrics, regression_metrics

POLL_S = 0.2  # how often the study looks at its trial jobs
# metric -> (scikit-learn scorer, greater is better)
METRICS: dict[str, dict[str, tuple[str, bool]]] = {
    "classification": {
        "accuracy": ("accuracy", True),
        "balanced_accuracy": ("balanced_accuracy", True),
        "f1_macro": ("f1_macro", True),
        "f1_weighted": ("f1_weighted", True),
        "roc_auc": ("roc_auc_ovr", True),
        "log_loss": ("neg_log_loss", False),
    },
    "regression": {
        "rmse": ("neg_root_mean_squared_error", False),
        "mae": ("neg_mean_absolute_error", False),
        "r2": ("r2", True),
    },
}

# A parameter's space: {"type": "int"|"float", "low", "high", "log"?} or {"type": "categorical",
# "choices": [...]}; a plain JSON value fixes the parameter.
Space = dict[str, Any]


def _f(low: float, high: float, log: bool = False) -> Space:
    return {"type": "float", "low": low, "high": high, "log": log}


def _i(low: int, high: int, log: bool = False) -> Space:
    return {"type": "int", "low": low, "high": high, "log": log}


# algorithm -> task -> (estimator's dotted name, default search space, fixed parameters)
ALGORITHMS: dict[str, dict[str, tuple[str, dict[str, Any], dict[str, Any]]]] = {
    "linear": {
        "classification": (
            "sklearn.linear_model.LogisticRegression",
            {"C": _f(1e-3, 1e3, log=True)},
            {"max_iter": 5000},
        ),
        "regression": ("sklearn.linear_model.Ridge", {"alpha": _f(1e-3, 1e3, log=True)}, {}),
    },
    "random_forest": {
        task: (
            f"sklearn.ensemble.RandomForest{kind}",
            {
                "n_estimators": _i(50, 300),
                "max_depth": _i(2, 24),
                "min_samples_leaf": _i(1, 8),
                "max_features": _f(0.1, 1.0),
            },
            {},
        )
        for task, kind in (("classification", "Classifier"), ("regression", "Regressor"))
    },
    "gradient_boosting": {
        task: (
            f"sklearn.ensemble.HistGradientBoosting{kind}",
            {
                "learning_rate": _f(0.01, 0.3, log=True),
                "max_iter": _i(50, 300),
                "max_leaf_nodes": _i(8, 64),
                "l2_regularization": _f(1e-6, 1.0, log=True),
            },
            {},
        )
        for task, kind in (("classification", "Classifier"), ("regression", "Regressor"))
    },
    "mlp": {
        task: (
            f"sklearn.neural_network.MLP{kind}",
            {
                "hidden_units": _i(16, 256, log=True),
                "alpha": _f(1e-6, 1e-1, log=True),
                "learning_rate_init": _f(1e-4, 1e-2, log=True),
            },
            {"max_iter": 500},
        )
        for task, kind in (("classification", "Classifier"), ("regression", "Regressor"))
    },
    "xgboost": {  # searched for xgboost models only (see FRAMEWORK_ALGORITHMS)
        task: (
            f"xgboost.XGB{kind}",
            {
                "n_estimators": _i(50, 400),
                "max_depth": _i(2, 10),
                "learning_rate": _f(0.01, 0.3, log=True),
                "subsample": _f(0.5, 1.0),
                "colsample_bytree": _f(0.5, 1.0),
                "min_child_weight": _f(0.5, 8.0),
                "reg_lambda": _f(1e-3, 10.0, log=True),
            },
            {"n_jobs": 1, "tree_method": "hist"},
        )
        for task, kind in (("classification", "Classifier"), ("regression", "Regressor"))
    },
}
DEFAULTS = ("linear", "random_forest", "gradient_boosting", "mlp")
# framework -> what its models search (all of it by default). Not xgboost for sklearn models: an
# XGBClassifier saved with skops holds xgboost types the sklearn runtime does not trust (ADR 28).
FRAMEWORK_ALGORITHMS: dict[str, tuple[str, ...]] = {"sklearn": DEFAULTS, "xgboost": ("xgboost",)}
SCALED = ("linear", "mlp")  # fitted behind a StandardScaler (a scikit-learn Pipeline)
VIRTUAL = {"hidden_units": "hidden_layer_sizes"}  # a one-layer MLP's width, searched as an integer
_SPACES = "searchSpaces"


class OptunaSearch:
    def __init__(self, storage_options: Callable[[str], dict[str, Any]] = lambda uri: {}) -> None:
        self._storage_options = storage_options

    # ---- what a request may name --------------------------------------------------------------------
    def algorithms(self, framework: str, task: str) -> tuple[str, ...]:
        from importlib.util import find_spec

        if task not in METRICS or (framework == "xgboost" and find_spec("xgboost") is None):
            return ()
        return FRAMEWORK_ALGORITHMS.get(framework, ())

    def default_algorithms(self, framework: str, task: str) -> tuple[str, ...]:
        return self.algorithms(framework, task)

    def metrics(self, task: str) -> tuple[str, ...]:
        return tuple(METRICS.get(task, {}))

    def problems(self, request: AutoMLRequest, algorithms: tuple[str, ...]) -> list[FieldError]:
        errors: list[FieldError] = []
        if not isinstance(request.search_spaces, dict):
            return [FieldError(_SPACES, "must be an object: algorithm -> {parameter: space}")]
        for algorithm, spaces in request.search_spaces.items():
            where = f"{_SPACES}.{algorithm}"
            if algorithm not in algorithms:
                errors.append(
                    FieldError(where, f"not one of the study's algorithms ({', '.join(algorithms)})")
                )
                continue
            if not isinstance(spaces, dict):
                errors.append(FieldError(where, "must be an object of parameter: space"))
                continue
            errors += _space_problems(algorithm, request.task, spaces, where)
        return errors

    # ---- the search -------------------------------------------------------------------------------
    def run(
        self,
        plan: SearchPlan,
        trials: TrialJobs,
        on_trial: Callable[[dict[str, Any]], bool],
        stopped: Callable[[], bool],
    ) -> SearchOutcome | None:
        """Ask the sampler for up to ``plan.parallel`` trials at a time, run each as a training job
        (``trials``), feed its fold reports to the pruner (a hopeless trial's job is cancelled) and tell
        the sampler each score; then refit the best trial here and register nothing (the caller does)."""
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        greater_is_better = METRICS[plan.task][plan.metric][1]
        spaces = {a: _merged_space(a, plan.task, plan.search_spaces.get(a, {})) for a in plan.algorithms}
        startup = max(2, min(5, (plan.max_trials or 10) // 2))
        study = optuna.create_study(
            direction="maximize" if greater_is_better else "minimize",
            sampler=optuna.samplers.TPESampler(seed=plan.seed, n_startup_trials=startup, constant_liar=True),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=0),
        )
        started = time.monotonic()
        deadline = started + plan.timeout_seconds if plan.timeout_seconds else None
        running: dict[str, _Pending] = {}
        unsent: _Pending | None = None  # asked of the sampler, refused by the quota for now
        asked = 0

        def budget_left() -> bool:
            trials_left = plan.max_trials is None or asked < plan.max_trials
            return trials_left and (deadline is None or time.monotonic() < deadline)

        while True:
            if stopped():
                for job_id in running:
                    trials.stop(job_id)
                return None
            room = budget_left()
            while len(running) < plan.parallel and (unsent is not None or room):
                if unsent is None:
                    trial = study.ask()
                    algorithm = trial.suggest_categorical("algorithm", list(plan.algorithms))
                    params = _suggest(trial, algorithm, spaces[algorithm])  # searched and fixed
                    unsent = _Pending(trial, algorithm, params)
                    asked += 1
                sent = trials.submit(unsent.trial.number, unsent.algorithm, _json_params(unsent.params))
                if sent is None:  # the quota has no room: again after the next look
                    break
                running[sent], unsent = unsent, None
                room = budget_left()
            if not running and unsent is None and not room:
                break  # the budget is spent and every trial has ended
            time.sleep(POLL_S)
            for job_id in list(running):
                pending = running[job_id]
                record = self._look(study, pending, job_id, trials)
                if record is None:
                    continue
                del running[job_id]
                record["elapsedSeconds"] = round(time.monotonic() - started, 3)
                record["bestSoFar"] = _leader(study)
                if not on_trial(record):
                    for other in running:
                        trials.stop(other)
                    return None
        if stopped():
            return None
        complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
        if not complete:
            failures = [t.user_attrs.get("error") for t in study.trials if t.user_attrs.get("error")]
            raise RuntimeError(
                "No trial finished" + (f": {failures[-1]}" if failures else " within the budget")
            )
        from threadpoolctl import threadpool_limits

        train, held_out = self._data(plan)
        with threadpool_limits(limits=1):  # one fit, on one core: the service keeps the rest
            return self._refit_best(plan, study.best_trial, spaces, train, held_out, len(study.trials))

    @staticmethod
    def _look(study: Any, pending: _Pending, job_id: str, trials: TrialJobs) -> dict[str, Any] | None:
        """Relay a trial job's new fold reports to the pruner; its record once it has ended (or been
        pruned here), else None."""
        import optuna

        look = trials.look(job_id)
        trial = pending.trial
        for step in range(pending.reported, len(look.reports)):
            trial.report(look.reports[step], step)
        pending.reported = max(pending.reported, len(look.reports))
        state: str
        if look.status in ("queued", "running"):
            if not pending.reported or not trial.should_prune():
                return None
            trials.stop(job_id)
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            state = "pruned"
        elif look.status == "succeeded" and look.score is not None:
            study.tell(trial, look.score)
            state = "complete"
        else:
            trial.set_user_attr("error", look.error or f"the trial's job was {look.status}")
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            state = "fail"
        record: dict[str, Any] = {
            "number": trial.number,
            "state": state,
            "algorithm": pending.algorithm,
            "params": _json_params(pending.params),
            "cvScore": look.score if state == "complete" else None,
            "folds": list(look.reports),
            "seconds": look.seconds,
            "jobId": job_id,
        }
        if state == "fail":
            record["error"] = look.error or f"the trial's job was {look.status}"
        return record

    def _refit_best(
        self,
        plan: SearchPlan,
        best: Any,
        spaces: dict[str, dict[str, Any]],
        train: Table,
        held_out: Table,
        trials: int,
    ) -> SearchOutcome:
        from aiservice.infrastructure.training.sklearn_trainer import FittedSklearn
        from aiservice.infrastructure.training.spec import TrainSpec

        algorithm = best.params["algorithm"]
        params = _params_of(best.params, algorithm, spaces[algorithm])
        estimator = trial_estimator(algorithm, plan.task, params, plan.seed).fit(train.X, train.y)
        baseline = _baseline(plan.task, plan.seed).fit(train.X, train.y)
        ours = _held_out_value(estimator, plan, held_out)
        theirs = _held_out_value(baseline, plan, held_out)
        greater_is_better = METRICS[plan.task][plan.metric][1]
        beats = ours > theirs if greater_is_better else ours < theirs
        dotted = ALGORITHMS[algorithm][plan.task][0]
        result: dict[str, Any] = {
            "best": {
                "number": best.number,
                "algorithm": algorithm,
                "estimator": dotted
                + (" after sklearn.preprocessing.StandardScaler" if algorithm in SCALED else ""),
                "params": _json_params(params),
                "cvScore": best.value,  # the metric as it reads (the study's direction follows it)
            },
            "metric": plan.metric,
            "heldOut": {plan.metric: ours, "rows": len(held_out.y)},
            "baseline": {
                "estimator": _baseline_name(plan.task),
                "params": {"random_state": plan.seed},
                plan.metric: theirs,
            },
            "beatsBaseline": beats,
            "trialsRun": trials,
        }
        if not beats:
            result["whyNotBetter"] = (
                f"the best trial's held-out {plan.metric} ({ours}) does not beat the default random "
                f"forest's ({theirs}); try a larger budget or other algorithms"
            )
        plan.work_dir.mkdir(parents=True, exist_ok=True)
        metrics = _version_metrics(estimator, plan, held_out)
        if plan.framework == "xgboost":  # the booster, as the xgboost trainer saves a job's
            from aiservice.infrastructure.automl import xgboost_search

            saved = xgboost_search.save(estimator, train.feature_names, plan.work_dir)
        else:
            spec = TrainSpec(framework="sklearn", algorithm=dotted, params={}, task=plan.task, seed=plan.seed)
            saved = FittedSklearn(estimator, spec).save(plan.work_dir)
        metrics[plan.metric] = ours
        metrics["baseline_" + plan.metric] = theirs
        return SearchOutcome(
            artifact=saved.path,
            filename=saved.filename,
            result=result,
            metrics=metrics,
            params={
                "algorithm": dotted,
                **_json_params(params),
                **({"classes": saved.classes} if saved.classes else {}),
            },
            # a booster answers class positions; the xgboost runtime maps them back to the labels
            configuration={"classes": saved.classes} if plan.framework == "xgboost" and saved.classes else {},
        )

    def _data(self, plan: SearchPlan) -> tuple[Table, Table]:
        return study_data(plan.dataset, plan.task, plan.seed, self._storage_options)


@dataclass
class _Pending:
    """A trial asked of the sampler: what its job runs, and how many of its fold reports were relayed."""

    trial: Any  # optuna.Trial
    algorithm: str
    params: dict[str, Any]
    reported: int = 0


def _estimator_class(algorithm: str, task: str) -> type:
    if algorithm == "xgboost":
        from aiservice.infrastructure.automl import xgboost_search

        return xgboost_search.estimator_class(task)
    from aiservice.infrastructure.training.catalog import sklearn_estimator_class

    return sklearn_estimator_class(ALGORITHMS[algorithm][task][0])


def trial_estimator(algorithm: str, task: str, params: dict[str, Any], seed: int) -> Any:
    """The trial's estimator; linear models and MLPs behind a standard scaler (they need scaled inputs)."""
    estimator = _bare_estimator(algorithm, task, params, seed)
    if algorithm not in SCALED:
        return estimator
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    return Pipeline([("scale", StandardScaler()), ("model", estimator)])


def _bare_estimator(algorithm: str, task: str, params: dict[str, Any], seed: int) -> Any:
    estimator_class = _estimator_class(algorithm, task)
    fixed = ALGORITHMS[algorithm][task][2]
    kwargs = {**fixed, **_real_params(params)}
    known = estimator_class().get_params(deep=False)
    if "random_state" in known and "random_state" not in kwargs:
        kwargs["random_state"] = seed
    return estimator_class(**kwargs)


def _real_params(params: dict[str, Any]) -> dict[str, Any]:
    real = {}
    for name, value in params.items():
        if name == "hidden_units":
            real[VIRTUAL[name]] = (int(value),)
        else:
            real[name] = value
    return real


def _json_params(params: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in params.items()}


def _baseline(task: str, seed: int) -> Any:
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

    if task == "classification":
        return RandomForestClassifier(random_state=seed)
    return RandomForestRegressor(random_state=seed)


def _baseline_name(task: str) -> str:
    kind = "Classifier" if task == "classification" else "Regressor"
    return f"sklearn.ensemble.RandomForest{kind}"


def _held_out_value(estimator: Any, plan: SearchPlan, held_out: Table) -> float:
    from sklearn.metrics import get_scorer

    scorer_name, greater_is_better = METRICS[plan.task][plan.metric]
    value = float(get_scorer(scorer_name)(estimator, held_out.X, held_out.y))
    return shown(value, greater_is_better)


def shown(score: float, greater_is_better: bool) -> float:
    """A scorer's value as the metric reads (rmse positive, not negated), rounded for JSON."""
    return round(score if greater_is_better else -score, 6)


def _version_metrics(estimator: Any, plan: SearchPlan, held_out: Table) -> dict[str, Any]:
    if plan.task == "classification":
        probabilities = estimator.predict_proba(held_out.X) if hasattr(estimator, "predict_proba") else None
        predicted = None if probabilities is not None else estimator.predict(held_out.X)
        classes = list(estimator.classes_)
        return dict(classification_metrics(held_out.y, probabilities, classes, predicted))
    return dict(regression_metrics(held_out.y, estimator.predict(held_out.X)))


def _leader(study: Any) -> dict[str, Any] | None:
    """The best complete trial so far: its number, algorithm and cross-validated score."""
    try:
        best = study.best_trial
    except ValueError:  # no trial has completed yet
        return None
    return {"number": best.number, "algorithm": best.params.get("algorithm"), "cvScore": best.value}


def _suggest(trial: Any, algorithm: str, spaces: dict[str, Any]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for name, space in spaces.items():
        key = f"{algorithm}.{name}"
        if not isinstance(space, dict):
            params[name] = space
        elif space["type"] == "int":
            params[name] = trial.suggest_int(
                key, int(space["low"]), int(space["high"]), log=bool(space.get("log"))
            )
        elif space["type"] == "float":
            params[name] = trial.suggest_float(
                key, float(space["low"]), float(space["high"]), log=bool(space.get("log"))
            )
        else:
            params[name] = trial.suggest_categorical(key, list(space["choices"]))
    return params


def _params_of(trial_params: dict[str, Any], algorithm: str, spaces: dict[str, Any]) -> dict[str, Any]:
    """A finished trial's parameters (searched and fixed) for ``algorithm``."""
    prefix = f"{algorithm}."
    params = {k[len(prefix) :]: v for k, v in trial_params.items() if k.startswith(prefix)}
    return {**{n: s for n, s in spaces.items() if not isinstance(s, dict)}, **params}


def _merged_space(algorithm: str, task: str, given: dict[str, Any]) -> dict[str, Any]:
    """The default space with the request's parameters replacing or adding to it."""
    return {**ALGORITHMS[algorithm][task][1], **given}


def _space_problems(algorithm: str, task: str, spaces: dict[str, Any], where: str) -> list[FieldError]:
    estimator_class = _estimator_class(algorithm, task)
    known = set(estimator_class().get_params(deep=False)) | {
        v for v in VIRTUAL if v in ALGORITHMS[algorithm][task][1]
    }
    known -= {"random_state"}
    if algorithm == "xgboost":
        from aiservice.infrastructure.automl import xgboost_search

        known = xgboost_search.known_params()
    errors: list[FieldError] = []
    samples: list[dict[str, Any]] = [{}, {}]
    for name, space in spaces.items():
        at = f"{where}.{name}"
        if name not in known:
            errors.append(FieldError(at, f"unknown parameter; {algorithm} takes {', '.join(sorted(known))}"))
            continue
        if not isinstance(space, dict):
            if not isinstance(space, str | int | float | bool) and space is not None:
                errors.append(FieldError(at, "a fixed value must be a string, number, boolean or null"))
                continue
            samples[0][name] = samples[1][name] = space
            continue
        kind = space.get("type")
        if kind in ("int", "float"):
            low: Any = space.get("low")
            high: Any = space.get("high")
            log = space.get("log", False)
            numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low, high))
            if kind == "int":
                numeric = numeric and all(isinstance(v, int) for v in (low, high))
            if not numeric or not math.isfinite(low) or not math.isfinite(high):
                errors.append(FieldError(at, f"{kind} spaces need finite {kind} 'low' and 'high'"))
            elif low > high:
                errors.append(FieldError(at, f"'low' ({low}) must not exceed 'high' ({high})"))
            elif not isinstance(log, bool):
                errors.append(FieldError(at, "'log' must be true or false"))
            elif log and low <= 0:
                errors.append(FieldError(at, "a log-scale space needs 'low' greater than 0"))
            else:
                samples[0][name], samples[1][name] = low, high
            unknown = set(space) - {"type", "low", "high", "log"}
        elif kind == "categorical":
            choices = space.get("choices")
            ok = (
                isinstance(choices, list)
                and choices
                and all(c is None or isinstance(c, str | int | float | bool) for c in choices)
            )
            if not ok:
                errors.append(
                    FieldError(at, "categorical spaces need a non-empty list of JSON scalars in 'choices'")
                )
            else:
                assert isinstance(choices, list)
                samples[0][name], samples[1][name] = choices[0], choices[-1]
            unknown = set(space) - {"type", "choices"}
        else:
            errors.append(FieldError(at, "'type' must be int, float or categorical (or give a fixed value)"))
            continue
        if unknown:
            errors.append(FieldError(at, f"unknown keys {', '.join(sorted(unknown))}"))
    if errors:
        return errors
    if algorithm == "xgboost":  # XGBoost checks little before fitting: the trainer's checks
        return xgboost_search.problems(task, spaces, samples, where)
    for sample in samples:  # the ends of every range must make a valid estimator
        try:
            estimator = _bare_estimator(algorithm, task, sample, 0)
            validate = getattr(estimator, "_validate_params", None)
            if validate is not None:
                validate()
        except (TypeError, ValueError) as exc:
            line = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            named = next((n for n in sample if f"'{n}'" in line or f"'{VIRTUAL.get(n, n)}'" in line), None)
            return [FieldError(f"{where}.{named}" if named else where, line)]
    return []
