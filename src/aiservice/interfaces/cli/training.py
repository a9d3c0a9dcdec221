"""``aiservice train`` and ``aiservice jobs``: submit and follow training jobs on a running service.

These commands are clients of the HTTP API (like ``mlflow`` against its tracking server), so they
work the same against a local ``make run`` and a remote deployment.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from aiservice.interfaces.cli.client import (
    API,
    DEFAULT_URL,
    TenantOption,
    TokenOption,
    UrlOption,
    api_client,
    checked,
)
from aiservice.interfaces.cli.exits import EPILOG, USAGE, fail

jobs_app = typer.Typer(help="Look at and cancel training jobs.", no_args_is_help=True, epilog=EPILOG)
console = Console()
RECONNECTS = 5  # tries in a row, a second apart, before --follow gives the server up as gone


def _load_config(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        fail(USAGE, f"--config: cannot read {path}: {exc}")
    if not isinstance(data, dict):
        fail(USAGE, f"--config: {path} must hold a mapping with trainingConfig and datasetConfig")
    return data


def train(
    model: Annotated[str, typer.Argument(help="The model's name or id")],
    config: Annotated[
        Path,
        typer.Option(
            "--config", "-c", help="YAML (or JSON) with trainingConfig, datasetConfig, resourceConfig"
        ),
    ],
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = "",
    tenant: TenantOption = "default",
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Show progress until the job ends")] = False,
) -> None:
    """Submit a training job; with --follow, show its progress until it ends."""
    body = _load_config(config)
    with api_client(url, token, tenant) as client:
        job = checked(client.post(f"{API}/models/{model}/train", json=body))
        console.print(f"job [bold]{job['id']}[/bold] {job['status']}")
        if follow:
            job = _follow(client, job["id"])
            if job["status"] != "succeeded":
                raise typer.Exit(1)


def _follow(client: httpx.Client, job_id: str) -> dict[str, Any]:
    """Render the job's Server-Sent Events as a progress bar, reconnecting with Last-Event-ID."""
    last = 0
    columns = (
        TextColumn("[bold]{task.fields[label]}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeRemainingColumn(),
        TextColumn("{task.fields[metrics]}"),
    )
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("training", total=1.0, label="queued", metrics="")
        failures = 0
        while True:
            try:
                with client.stream(
                    "GET", f"{API}/training-jobs/{job_id}/events", headers={"Last-Event-ID": str(last)}
                ) as stream:
                    failures = 0
                    if not stream.is_success:
                        stream.read()
                        checked(stream)
                    event, data = "", ""
                    for line in stream.iter_lines():
                        if line.startswith("id:"):
                            last = int(line[3:].strip())
                        elif line.startswith("event:"):
                            event = line[6:].strip()
                        elif line.startswith("data:"):
                            data = line[5:].strip()
                        elif not line and data:
                            _show(bar, task, event, json.loads(data))
                            event, data = "", ""
                break
            except httpx.TransportError:
                failures += 1
                if failures >= RECONNECTS:
                    raise  # the client reports the server as unreachable
                time.sleep(1.0)  # then resume after the last event seen
    job: dict[str, Any] = checked(client.get(f"{API}/training-jobs/{job_id}"))
    _summary(job)
    return job


def _show(bar: Progress, task: Any, event: str, data: dict[str, Any]) -> None:
    if event == "progress":
        epoch = f"epoch {data['epoch']}/{data['epochs']}" if data.get("epoch") else "training"
        metrics = "  ".join(f"{k} {v:.4g}" for k, v in (data.get("metrics") or {}).items())
        bar.update(task, completed=data.get("progress", 0), label=epoch, metrics=metrics)
    elif event == "status":
        bar.update(task, label=data["status"])
        if data["status"] == "succeeded":
            bar.update(task, completed=1.0)


def _summary(job: dict[str, Any]) -> None:
    status = job["status"]
    colour = {"succeeded": "green", "failed": "red", "cancelled": "yellow"}.get(status, "white")
    console.print(f"job {job['id']}: [{colour}]{status}[/{colour}]")
    if job.get("version"):
        console.print(f"registered version {job['version']} of model {job['modelId']}")
    if job.get("error"):
        console.print(f"[red]{job['error']['stage']}[/red]: {job['error']['message']}")
    if job.get("metrics"):
        console.print(
            "  ".join(f"{k} {v:.4g}" for k, v in job["metrics"].items() if isinstance(v, int | float))
        )


@jobs_app.command("list")
def list_jobs(
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = "",
    tenant: TenantOption = "default",
    model: Annotated[str | None, typer.Option(help="Only this model's jobs")] = None,
    status: Annotated[
        str | None, typer.Option(help="queued, running, succeeded, failed or cancelled")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=500)] = 20,
) -> None:
    """The latest jobs, newest first."""
    params: dict[str, Any] = {"limit": limit}
    if model:
        params["modelId"] = model
    if status:
        params["status"] = status
    with api_client(url, token, tenant) as client:
        page = checked(client.get(f"{API}/training-jobs", params=params))
    table = Table("id", "model", "status", "progress", "version", "created")
    for job in page["items"]:
        table.add_row(
            job["id"],
            job["modelId"],
            job["status"],
            f"{job['progress'] * 100:.0f}%",
            str(job.get("version") or ""),
            job["createdAt"],
        )
    console.print(table)


@jobs_app.command("show")
def show_job(
    job_id: Annotated[str, typer.Argument(help="The job's id")],
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = "",
    tenant: TenantOption = "default",
) -> None:
    """One job as JSON."""
    with api_client(url, token, tenant) as client:
        job = checked(client.get(f"{API}/training-jobs/{job_id}"))
    console.print_json(data=job)


@jobs_app.command("cancel")
def cancel_job(
    job_id: Annotated[str, typer.Argument(help="The job's id")],
    url: UrlOption = DEFAULT_URL,
    token: TokenOption = "",
    tenant: TenantOption = "default",
) -> None:
    """Cancel a queued or running job."""
    with api_client(url, token, tenant) as client:
        job = checked(client.post(f"{API}/training-jobs/{job_id}/cancel"))
    console.print(f"job {job['id']}: {job['status']}")
