"""``aiservice automl``, ``optimize``, ``export`` and ``import``: AutoML studies with a live leaderboard,
optimised versions, edge bundles and imported MLflow or Hugging Face folders, through the SDK
(``aiservice.client``) against a running service."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.live import Live
from rich.table import Table

from aiservice.client import AutoMLStudy, Client, StudyState
from aiservice.client import (
    _lifecycle as lifecycle,
)  # the service's own bodies, as the --config files hold them
from aiservice.interfaces.cli.client import (
    TenantOption,
    TokenOption,
    UrlOption,
    YesOption,
    connect,
    resolve,
)
from aiservice.interfaces.cli.exits import EPILOG, PROBLEM, USAGE, fail
from aiservice.interfaces.cli.output import Format, OutputOption, cell, console, print_json, sheet, table
from aiservice.interfaces.cli.registry import ModelArgument, VersionArgument
from aiservice.interfaces.cli.training import model_id

automl_app = typer.Typer(
    help="AutoML studies: search algorithms and parameters, register the best trial.",
    no_args_is_help=True,
    epilog=EPILOG,
)
StudyArgument = Annotated[str, typer.Argument(help="The study's id, or a unique start of it")]
LEADERBOARD_ROWS = 10
COLOURS = {"succeeded": "green", "failed": "red", "cancelled": "yellow"}


def _load_body(path: Path, holds: str) -> dict[str, Any]:
    """A --config file: a YAML (or JSON) mapping, the request body as the API takes it."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        fail(USAGE, f"--config: cannot read {path}: {exc}")
    if not isinstance(data, dict):
        fail(USAGE, f"--config: {path} must hold a mapping with {holds}")
    return data


def study_id(client: Client, model: str, given: str) -> str:
    return resolve(given, "study", client.automl.list(model), lambda s: s.id)


def _score(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) and not isinstance(value, bool) else ""


def _best(state: StudyState) -> str:
    best = state.best or {}
    return f"{best.get('algorithm')} {state.metric} {_score(state.best_score)}" if best else ""


# AutoML


@automl_app.command("start")
def start_study(
    model: ModelArgument,
    config: Annotated[
        Path,
        typer.Option(
            "--config",
            "-c",
            help="YAML or JSON: datasetConfig, task, metric, budget {maxTrials, timeoutSeconds}, algorithms, "
            "searchSpaces, seed, cvFolds, parallelTrials",
        ),
    ],
    url: UrlOption = None,
    token: TokenOption = None,
    tenant: TenantOption = None,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Show the leaderboard live until the study ends")
    ] = False,
    output: OutputOption = Format.table,
) -> None:
    """Start an AutoML study; with --follow, show its leaderboard as trials finish.

    With --follow the exit status is 1 unless the study succeeded (and registered a version)."""
    body = _load_body(config, "datasetConfig, task, metric and budget")
    with connect(url, token, tenant) as client:
        study = AutoMLStudy(client, client._call(lifecycle.start_study(model_id(client, model), body)))
        if not follow:
            if output is Format.json:
                print_json(study.state.raw)
            else:
                typer.echo(f"study {study.id} {study.status}")
            return
        if output is Format.table:
            console().print(f"study [bold]{study.id}[/bold] {study.status}")
            _follow(study)
        else:
            for _event in study.stream():
                pass
    if output is Format.json:
        print_json(study.state.raw)
    else:
        _summary(study.state)
    if study.status != "succeeded":
        raise typer.Exit(PROBLEM)


def leaderboard(state: StudyState, trials: list[dict[str, Any]], status: str) -> Table:
    """The complete trials so far, best first (``LEADERBOARD_ROWS`` at most), under a status line."""
    greater = state.metric not in ("rmse", "mae", "log_loss")
    complete = [t for t in trials if t.get("state") == "complete" and t.get("cvScore") is not None]
    board = sorted(complete, key=lambda t: float(t["cvScore"]), reverse=greater)
    shown = f"{len(trials)} trials, {len(trials) - len(complete)} pruned or failed"
    grid = Table("#", "trial", "algorithm", state.metric, "params", title=f"{status}: {shown}")
    for rank, trial in enumerate(board[:LEADERBOARD_ROWS], 1):
        grid.add_row(
            str(rank), str(trial.get("number")), str(trial.get("algorithm")), _score(trial["cvScore"]),
            cell(trial.get("params")),
        )  # fmt: skip
    return grid


def _follow(study: AutoMLStudy) -> None:
    """The study's trial events (the SDK resumes the stream after the last one seen) as a live table."""
    trials: list[dict[str, Any]] = []
    with Live(leaderboard(study.state, trials, study.status), console=console(), auto_refresh=False) as live:
        for event in study.stream():
            if event.event == "trial":
                trials.append(event.data)
                live.update(leaderboard(study.state, trials, "running"), refresh=True)
        live.update(leaderboard(study.state, study.state.trials, study.status), refresh=True)


def _summary(state: StudyState) -> None:
    out = console()
    colour = COLOURS.get(state.status, "white")
    out.print(f"study {state.id}: [{colour}]{state.status}[/{colour}]")
    if state.best:
        out.print(f"best: {_best(state)} {cell(state.best.get('params'))}")
    if state.version is not None:
        baseline = ""
        if state.beats_baseline is not None:
            beats = "beats" if state.beats_baseline else "does not beat"
            baseline = f" ({beats} the default random forest)"
        out.print(f"registered version {state.version} of model {state.model_id}{baseline}")
    if state.error:
        out.print(f"[red]{state.error}[/red]")


@automl_app.command("list")
def list_studies(
    model: ModelArgument,
    url: UrlOption = None,
    token: TokenOption = None,
    tenant: TenantOption = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="At most this many")] = 20,
    output: OutputOption = Format.table,
) -> None:
    """A model's AutoML studies, newest first."""
    with connect(url, token, tenant) as client:
        studies = list(itertools.islice(client.automl.list(model_id(client, model), page_size=limit), limit))
    rows = [
        (
            s.id,
            s.status,
            s.state.metric,
            len(s.state.trials),
            _best(s.state),
            s.version,
            s.state.raw.get("createdAt"),
        )
        for s in studies
    ]
    headers = ("id", "status", "metric", "trials", "best", "version", "created")
    table(output, headers, rows, [s.state.raw for s in studies])


@automl_app.command("get")
def get_study(
    model: ModelArgument,
    study: StudyArgument,
    url: UrlOption = None,
    token: TokenOption = None,
    tenant: TenantOption = None,
    output: OutputOption = Format.table,
) -> None:
    """One study: its status, budget, best trial, held-out result and the version it registered."""
    with connect(url, token, tenant) as client:
        chosen = model_id(client, model)
        state = client.automl.get(chosen, study_id(client, chosen, study)).state
    held_out = (state.result or {}).get("heldOut")
    sheet(
        output,
        state.raw,
        [
            ("id", state.id),
            ("model", state.model_id),
            ("status", state.status),
            ("task", state.task),
            ("metric", state.metric),
            ("budget", {k: v for k, v in state.budget.items() if v is not None}),
            ("algorithms", state.algorithms),
            ("trials", len(state.trials)),
            ("best", _best(state)),
            ("best params", (state.best or {}).get("params")),
            ("held out", held_out),
            ("beats baseline", state.beats_baseline),
            ("version", state.version),
            ("error", state.error),
            ("created", state.raw.get("createdAt")),
            ("finished", state.raw.get("finishedAt")),
        ],
    )


@automl_app.command("cancel")
def cancel_study(
    model: ModelArgument,
    study: StudyArgument,
    url: UrlOption = None,
    token: TokenOption = None,
    tenant: TenantOption = None,
    yes: YesOption = False,
) -> None:
    """Cancel a queued or running study (its running trials too); nothing is registered."""
    with connect(url, token, tenant) as client:
        chosen = model_id(client, model)
        found = study_id(client, chosen, study)
        if not yes:
            typer.confirm(f"cancel AutoML study {found}?", abort=True)
        cancelled = client.automl.cancel(chosen, found).state
    typer.echo(f"study {cancelled.id}: {cancelled.status}")


# Optimisation, export, import


def optimize(
    model: ModelArgument,
    version: VersionArgument,
    method: Annotated[str, typer.Option(help="quantization, pruning or float16")],
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            "-c",
            help="YAML or JSON with the rest of the body: validation {rows, labels} or {datasetConfig, "
            "sample}, maxAccuracyDrop, mode, form, sparsity, calibrationRows, targetModel...",
        ),
    ] = None,
    max_accuracy_drop: Annotated[
        float | None, typer.Option(min=0, max=1, help="Refuse a result losing more (default 0.01)")
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    tenant: TenantOption = None,
    output: OutputOption = Format.table,
) -> None:
    """Quantise, prune or halve a version into a new, measured version.

    A result that loses more than maxAccuracyDrop is refused (exit status 1, with the drop) and nothing is
    registered."""
    body: dict[str, Any] = _load_body(config, "validation") if config is not None else {}
    body["method"] = method
    if max_accuracy_drop is not None:
        body["maxAccuracyDrop"] = max_accuracy_drop
    if "validation" not in body:
        fail(USAGE, "--config: give the validation rows and labels (or a datasetConfig) to measure on")
    with connect(url, token, tenant) as client:
        created = client._call(lifecycle.optimize(model_id(client, model), version, body))
    if output is Format.json:
        print_json(created.raw)
        return
    record = created.raw.get("lineage", {}).get("optimization", {})
    typer.echo(
        f"created version {created.version} of model {created.model_id} ({method} of version {version})"
    )
    figures = [
        (name, record.get(f"{name}Before"), record.get(f"{name}After"))
        for name in ("accuracy", "rmse", "sizeBytes", "latencyUs")
        if f"{name}Before" in record
    ]
    for name, before, after in figures:
        typer.echo(f"  {name}: {cell(before)} -> {cell(after)}")


def export(
    model: ModelArgument,
    version: VersionArgument,
    format: Annotated[
        str, typer.Option("--format", help="onnx, torchscript (PyTorch) or tflite (Keras)")
    ] = "onnx",
    out: Annotated[
        Path | None,
        typer.Option("--out", help="The zip to write, or a folder for it (default: its name, here)"),
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    tenant: TenantOption = None,
) -> None:
    """Export a version as an edge bundle, to run it without the service.

    The zip holds the model file, schema.json, README.md and run.py; it is checked against its SHA-256."""
    if format not in lifecycle.EXPORT_FORMATS:
        fail(USAGE, f"--format {format!r}: use one of {', '.join(lifecycle.EXPORT_FORMATS)}")
    with connect(url, token, tenant) as client:
        written = client.versions.export(model_id(client, model), version, format, out)
    typer.echo(f"wrote {written} ({written.stat().st_size} bytes)")


def import_model(
    model: ModelArgument,
    archive: Annotated[
        Path, typer.Argument(help="A zip or tar.gz of the model folder, or the folder itself (zipped here)")
    ],
    source: Annotated[
        str | None,
        typer.Option(help="mlflow or huggingface (default: told by MLmodel or config.json)"),
    ] = None,
    description: Annotated[str, typer.Option(help="What the version is")] = "",
    url: UrlOption = None,
    token: TokenOption = None,
    tenant: TenantOption = None,
    output: OutputOption = Format.table,
) -> None:
    """Import an MLflow or Hugging Face-style model folder as the model's next version."""
    if not archive.exists():
        fail(USAGE, f"{archive} is neither a file nor a folder")
    if source is not None and source not in lifecycle.IMPORT_SOURCES:
        fail(USAGE, f"--source {source!r}: use one of {', '.join(lifecycle.IMPORT_SOURCES)}")
    metadata = {"description": description} if description else None
    with connect(url, token, tenant) as client:
        version = client.models.import_model(
            model_id(client, model),
            archive,
            source=source,
            metadata=metadata,
            progress=output is Format.table,
        )
    if output is Format.json:
        print_json(version.raw)
    else:
        typer.echo(f"imported version {version.version} of model {version.model_id} ({version.stage})")
