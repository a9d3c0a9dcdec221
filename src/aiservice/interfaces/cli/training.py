"""``aiservice train`` and ``aiservice jobs``: submit and follow training jobs on a running service.

These commands are clients of the HTTP API (like ``mlflow`` against its tracking server), through the SDK
(``aiservice.client``), so they work the same against a local ``make run`` and a remote deployment.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from aiservice.client import Client, TrainingJob
from aiservice.client import _ops as ops  # the service's own train body, as the --config file holds it
from aiservice.interfaces.cli.client import TenantOption, TokenOption, UrlOption, connect, resolve
from aiservice.interfaces.cli.exits import EPILOG, PROBLEM, USAGE, fail
from aiservice.interfaces.cli.output import Format, OutputOption, console, sheet, table

jobs_app = typer.Typer(help="Look at and cancel training jobs.", no_args_is_help=True, epilog=EPILOG)
JobArgument = Annotated[str, typer.Argument(help="The job's id, or a unique start of it")]


def _load_config(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        fail(USAGE, f"--config: cannot read {path}: {exc}")
    if not isinstance(data, dict):
        fail(USAGE, f"--config: {path} must hold a mapping with trainingConfig and datasetConfig")
    return data


def model_id(client: Client, given: str) -> str:
    """A model's name, id or unique id prefix as something the API takes (its id or name)."""
    return resolve(given, "model", client.models.list(), lambda m: m.id, names=lambda m: m.name)


def job_id(client: Client, given: str) -> str:
    return resolve(given, "job", client.jobs.list(), lambda j: j.id)


def train(
    model: Annotated[str, typer.Argument(help="The model's name or id (or a unique start of the id)")],
    config: Annotated[
        Path,
        typer.Option(
            "--config", "-c", help="YAML (or JSON) with trainingConfig, datasetConfig, resourceConfig"
        ),
    ],
    url: UrlOption = None,
    token: TokenOption = None,
    tenant: TenantOption = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Show progress until the job ends")] = False,
) -> None:
    """Submit a training job; with --follow, show its progress until it ends.

    With --follow the exit status is 1 unless the job succeeded."""
    body = _load_config(config)
    with connect(url, token, tenant) as client:
        job = TrainingJob(client, client._call(ops.train(model_id(client, model), body)))
        console().print(f"job [bold]{job.id}[/bold] {job.status}")
        if follow:
            _follow(job)
            _summary(job.state.raw)
            if job.status != "succeeded":
                raise typer.Exit(PROBLEM)


def _follow(job: TrainingJob) -> None:
    """The job's events (the SDK resumes the stream after the last one seen) as a progress bar."""
    columns = (
        TextColumn("[bold]{task.fields[label]}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[metrics]}"),
    )
    with Progress(*columns, console=console()) as bar:
        task = bar.add_task("training", total=1.0, label="queued", metrics="")
        for event in job.stream():
            data = event.data
            if event.event == "progress":
                epoch = f"epoch {data['epoch']}/{data['epochs']}" if data.get("epoch") else "training"
                metrics = "  ".join(
                    f"{k} {v:.4g}" for k, v in (data.get("metrics") or {}).items() if _number(v)
                )
                bar.update(task, completed=data.get("progress", 0), label=epoch, metrics=metrics)
            elif event.event == "status":
                bar.update(task, label=data["status"])
                if data["status"] == "succeeded":
                    bar.update(task, completed=1.0)
    if not job.state.finished:
        job.refresh()


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _summary(job: dict[str, Any]) -> None:
    out = console()
    status = job["status"]
    colour = {"succeeded": "green", "failed": "red", "cancelled": "yellow"}.get(status, "white")
    out.print(f"job {job['id']}: [{colour}]{status}[/{colour}]")
    if job.get("version"):
        out.print(f"registered version {job['version']} of model {job['modelId']}")
    if job.get("error"):
        out.print(f"[red]{job['error']['stage']}[/red]: {job['error']['message']}")
    if job.get("metrics"):
        out.print("  ".join(f"{k} {v:.4g}" for k, v in job["metrics"].items() if _number(v)))


@jobs_app.command("list")
def list_jobs(
    url: UrlOption = None,
    token: TokenOption = None,
    tenant: TenantOption = None,
    model: Annotated[str | None, typer.Option(help="Only this model's jobs (name or id)")] = None,
    status: Annotated[
        str | None, typer.Option(help="queued, running, succeeded, failed or cancelled")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=500, help="At most this many")] = 20,
    output: OutputOption = Format.table,
) -> None:
    """The latest jobs, newest first."""
    with connect(url, token, tenant) as client:
        chosen = model_id(client, model) if model else None
        jobs = list(itertools.islice(client.jobs.list(model=chosen, status=status, page_size=limit), limit))
    rows = [
        (
            j.id,
            j.state.model_id,
            j.status,
            f"{j.state.progress * 100:.0f}%",
            j.version,
            j.state.raw.get("createdAt"),
        )
        for j in jobs
    ]
    table(
        output, ("id", "model", "status", "progress", "version", "created"), rows, [j.state.raw for j in jobs]
    )


@jobs_app.command("show")
def show_job(
    job: JobArgument,
    url: UrlOption = None,
    token: TokenOption = None,
    tenant: TenantOption = None,
    output: OutputOption = Format.table,
) -> None:
    """One job: its status, progress, metrics and the version it registered."""
    with connect(url, token, tenant) as client:
        state = client.jobs.get(job_id(client, job)).state
    error = state.error or {}
    sheet(
        output,
        state.raw,
        [
            ("id", state.id),
            ("model", state.model_id),
            ("status", state.status),
            ("progress", f"{state.progress * 100:.0f}%"),
            ("epoch", f"{state.epoch}/{state.epochs}" if state.epochs else None),
            ("version", state.version),
            ("metrics", {k: v for k, v in state.metrics.items() if _number(v)}),
            ("error", f"{error.get('stage')}: {error.get('message')}" if error else None),
            ("device", state.device),
            ("created", state.raw.get("createdAt")),
            ("finished", state.raw.get("finishedAt")),
        ],
    )


@jobs_app.command("cancel")
def cancel_job(
    job: JobArgument,
    url: UrlOption = None,
    token: TokenOption = None,
    tenant: TenantOption = None,
) -> None:
    """Cancel a queued or running job."""
    with connect(url, token, tenant) as client:
        cancelled = client.jobs.cancel(job_id(client, job)).state
    typer.echo(f"job {cancelled.id}: {cancelled.status}")
