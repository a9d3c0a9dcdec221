"""``aiservice login|logout``, ``models``, ``versions`` and ``predict``: the model registry and predictions
from a terminal, through the SDK (``aiservice.client``) against a running service."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from aiservice.client import Prediction, ProblemError
from aiservice.interfaces.cli import config
from aiservice.interfaces.cli.client import (
    TenantOption,
    TokenOption,
    UrlOption,
    YesOption,
    base_url,
    connect,
    settle,
)
from aiservice.interfaces.cli.exits import EPILOG, PROBLEM, USAGE, fail
from aiservice.interfaces.cli.output import Format, OutputOption, print_json, sheet, table
from aiservice.interfaces.cli.training import model_id

models_app = typer.Typer(help="Models of the registry.", no_args_is_help=True, epilog=EPILOG)
versions_app = typer.Typer(help="A model's versions (its artifacts).", no_args_is_help=True, epilog=EPILOG)
ModelArgument = Annotated[str, typer.Argument(help="The model's name or id (or a unique start of the id)")]
VersionArgument = Annotated[int, typer.Argument(help="The version number", min=1)]


def login(
    url: UrlOption = None,
    token: TokenOption = None,
    tenant: TenantOption = None,
) -> None:
    """Check a token against the service and store the URL, tenant and token for later commands.

    They go to $XDG_CONFIG_HOME/aiservice/config.toml (~/.config/... without it; AISERVICE_CONFIG names
    another file), readable by you only; --url, --token, --tenant and AISERVICE_* still win over it."""
    if token is None:
        token = typer.prompt("API token", hide_input=True)
    with connect(url, token, tenant) as client:
        next(iter(client.models.list(page_size=1)), None)  # refused here when the token is not good
        chosen = config.Login(url=base_url(client.url), tenant=client.tenant, token=token.strip())
    path = config.save(chosen)
    typer.echo(f"logged in to {chosen.url} as tenant {chosen.tenant}; saved in {path}")


def logout() -> None:
    """Forget the stored login (remove the config file)."""
    path = config.forget()
    typer.echo(f"removed {path}" if path else f"not logged in (no {config.config_file()})")


def whoami(url: UrlOption = None, token: TokenOption = None, tenant: TenantOption = None) -> None:
    """Where later commands go: the URL and tenant (from the flags, AISERVICE_* or the stored login)."""
    chosen_url, chosen_token, chosen_tenant = settle(url, token, tenant)
    typer.echo(f"{chosen_url} tenant {chosen_tenant} ({'a token is set' if chosen_token else 'no token'})")


def _json_option(text: str | None, option: str) -> Any:
    """A JSON value given inline, or ``@file`` for a file holding one."""
    if text is None:
        return None
    try:
        source = Path(text[1:]).read_text() if text.startswith("@") else text
        return json.loads(source)
    except (OSError, ValueError) as exc:
        fail(USAGE, f"{option}: not JSON (give it inline or as @file.json): {exc}")


def _pairs(values: list[str] | None, option: str, numbers: bool) -> dict[str, Any]:
    pairs: dict[str, Any] = {}
    for item in values or []:
        name, sep, value = item.partition("=")
        if not sep or not name:
            fail(USAGE, f"{option} {item!r}: use NAME=VALUE")
        try:
            pairs[name] = float(value) if numbers else json.loads(value)
        except ValueError:
            if numbers:
                fail(USAGE, f"{option} {item!r}: the value must be a number")
            pairs[name] = value
    return pairs


# Models


@models_app.command("list")
def list_models(
    url: UrlOption = None,
    token: TokenOption = None,
    tenant: TenantOption = None,
    framework: Annotated[str | None, typer.Option(help="Only this framework's models")] = None,
    category: Annotated[str | None, typer.Option(help="Only this category")] = None,
    tag: Annotated[str | None, typer.Option(help="Only models with this tag")] = None,
    search: Annotated[
        str | None, typer.Option("--search", "-q", help="Text in the name or description")
    ] = None,
    output: OutputOption = Format.table,
) -> None:
    """Every model of the tenant."""
    with connect(url, token, tenant) as client:
        models = list(client.models.list(framework=framework, category=category, tag=tag, q=search))
    rows = [(m.id, m.name, m.framework, m.latest_version, m.category, m.tags) for m in models]
    table(output, ("id", "name", "framework", "latest", "category", "tags"), rows, [m.raw for m in models])


@models_app.command("show")
def show_model(
    model: ModelArgument,
    url: UrlOption = None,
    token: TokenOption = None,
    tenant: TenantOption = None,
    output: OutputOption = Format.table,
) -> None:
    """One model: its framework, schema, latest version and aliases."""
    with connect(url, token, tenant) as client:
        found = client.models.get(model_id(client, model))
    features = found.input_schema.get("features") or []
    sheet(
        output,
        found.raw,
        [
            ("id", found.id),
            ("name", found.name),
            ("framework", found.framework),
            ("description", found.description),
            ("category", found.category),
            ("tags", found.tags),
            ("latest version", found.latest_version),
            ("aliases", found.aliases),
            ("input features", [f.get("name") for f in features if isinstance(f, dict)]),
            ("created", found.raw.get("createdAt")),
        ],
    )


@models_app.command("create")
def create_model(
    name: Annotated[str, typer.Argument(help="A name unique in the tenant")],
    framework: Annotated[str, typer.Option(help="sklearn, xgboost, lightgbm, pytorch, tensorflow, onnx...")],
    url: UrlOption = None,
    token: TokenOption = None,
    tenant: TenantOption = None,
    description: Annotated[str, typer.Option(help="What it does")] = "",
    category: Annotated[str | None, typer.Option(help="classification, regression...")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="A tag; repeat for several")] = None,
    input_schema: Annotated[str | None, typer.Option(help="The input schema as JSON, or @file.json")] = None,
    output: OutputOption = Format.table,
) -> None:
    """Register a model (its versions are uploaded with `aiservice versions upload`)."""
    schema = _json_option(input_schema, "--input-schema")
    with connect(url, token, tenant) as client:
        created = client.models.create(
            name, framework, description=description, category=category, input_schema=schema, tags=tag
        )
    if output is Format.json:
        print_json(created.raw)
    else:
        typer.echo(f"created model {created.name} {created.id}")


@models_app.command("delete")
def delete_model(
    model: ModelArgument,
    url: UrlOption = None,
    token: TokenOption = None,
    tenant: TenantOption = None,
    yes: YesOption = False,
) -> None:
    """Delete a model and its versions (kept for `aiservice purge` to erase later)."""
    with connect(url, token, tenant) as client:
        chosen = model_id(client, model)
        if not yes:
            typer.confirm(f"delete model {model} ({chosen})?", abort=True)
        client.models.delete(chosen)
    typer.echo(f"deleted model {model}")


# Versions


@versions_app.command("upload")
def upload_version(
    model: ModelArgument,
    artifact: Annotated[
        Path, typer.Argument(help="The model file (skops, ubj, txt, safetensors, keras, onnx...)")
    ],
    url: UrlOption = None,
    token: TokenOption = None,
    tenant: TenantOption = None,
    framework: Annotated[str | None, typer.Option(help="Default: the model's")] = None,
    description: Annotated[str, typer.Option(help="What changed")] = "",
    metric: Annotated[list[str] | None, typer.Option(help="NAME=NUMBER; repeat for several")] = None,
    param: Annotated[list[str] | None, typer.Option(help="NAME=VALUE (JSON or text); repeat")] = None,
    output: OutputOption = Format.table,
) -> None:
    """Upload a file as the model's next version (a progress bar shows the bytes sent)."""
    if not artifact.is_file():
        fail(USAGE, f"{artifact} is not a file")
    metrics = _pairs(metric, "--metric", numbers=True)
    params = _pairs(param, "--param", numbers=False)
    with connect(url, token, tenant) as client:
        version = client.models.upload_version(
            model_id(client, model),
            artifact,
            framework=framework,
            description=description,
            metrics=metrics or None,
            params=params or None,
            progress=output is Format.table,
        )
    if output is Format.json:
        print_json(version.raw)
    else:
        typer.echo(f"uploaded version {version.version} of model {version.model_id} ({version.stage})")


@versions_app.command("list")
def list_versions(
    model: ModelArgument,
    url: UrlOption = None,
    token: TokenOption = None,
    tenant: TenantOption = None,
    output: OutputOption = Format.table,
) -> None:
    """A model's versions, with their stage, artifact and metrics."""
    with connect(url, token, tenant) as client:
        versions = list(client.versions.list(model_id(client, model)))
    rows = [
        (v.version, v.stage, v.artifact.filename, v.artifact.size_bytes, v.metrics, v.raw.get("createdAt"))
        for v in versions
    ]
    table(
        output, ("version", "stage", "file", "bytes", "metrics", "created"), rows, [v.raw for v in versions]
    )


@versions_app.command("download")
def download_version(
    model: ModelArgument,
    version: VersionArgument,
    url: UrlOption = None,
    token: TokenOption = None,
    tenant: TenantOption = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Where to write it (default: its file name, here)")
    ] = None,
) -> None:
    """Download a version's artifact, checked against its SHA-256."""
    with connect(url, token, tenant) as client:
        chosen = model_id(client, model)
        target = out or Path(Path(client.versions.get(chosen, version).artifact.filename).name)
        client.versions.download(chosen, version, target)
    typer.echo(f"wrote {target} ({target.stat().st_size} bytes)")


@versions_app.command("promote")
def promote_version(
    model: ModelArgument,
    version: VersionArgument,
    url: UrlOption = None,
    token: TokenOption = None,
    tenant: TenantOption = None,
    stage: Annotated[str | None, typer.Option(help="staging, production, archived or none")] = None,
    alias: Annotated[str | None, typer.Option(help="Point this alias at the version")] = None,
    archive_existing: Annotated[bool, typer.Option(help="Archive the versions now in that stage")] = False,
    output: OutputOption = Format.table,
) -> None:
    """Move a version to a stage and/or point an alias at it."""
    if stage is None and alias is None:
        fail(USAGE, "name a --stage, an --alias, or both")
    with connect(url, token, tenant) as client:
        promoted = client.versions.promote(
            model_id(client, model), version, stage=stage, alias=alias, archive_existing=archive_existing
        )
    if output is Format.json:
        print_json(promoted.raw)
    else:
        pointed = f", alias {alias}" if alias else ""
        typer.echo(f"version {promoted.version} of model {promoted.model_id}: {promoted.stage}{pointed}")


# Predictions


def _answer(outcome: Prediction | ProblemError) -> dict[str, Any]:
    if isinstance(outcome, ProblemError):
        return {"error": outcome.problem}
    answer: dict[str, Any] = {
        "prediction": outcome.prediction,
        "modelId": outcome.model_id,
        "version": outcome.version,
    }
    extra = {
        "confidence": outcome.confidence,
        "probabilities": outcome.probabilities,
        "featureImportance": outcome.feature_importance,
        "experiment": outcome.experiment,
    }
    return answer | {k: v for k, v in extra.items() if v is not None}


def _read_inputs(path: Path) -> list[Any]:
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        fail(USAGE, f"--file: cannot read {path}: {exc}")
    inputs = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as exc:
            fail(USAGE, f"--file: line {number} of {path} is not JSON: {exc}")
        if not isinstance(value, dict | list):
            fail(USAGE, f"--file: line {number} of {path} must be an object of features or a list")
        inputs.append(value)
    if not inputs:
        fail(USAGE, f"--file: {path} holds no inputs (one JSON object a line)")
    return inputs


def predict(
    model: ModelArgument,
    input: Annotated[
        str | None, typer.Option("--input", "-i", help='One input as JSON: {"feature": value, ...}')
    ] = None,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="Many inputs: a JSON Lines file, one input a line")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the --file predictions here (JSON Lines)")
    ] = None,
    url: UrlOption = None,
    token: TokenOption = None,
    tenant: TenantOption = None,
    version: Annotated[int | None, typer.Option(help="This version (default: the served one)")] = None,
    alias: Annotated[str | None, typer.Option(help="The version this alias points at")] = None,
    confidence: Annotated[bool, typer.Option(help="Include the confidence and probabilities")] = False,
    chunk_size: Annotated[int, typer.Option(min=1, max=1000, help="Inputs per request")] = 256,
    concurrency: Annotated[int, typer.Option(min=1, max=32, help="Requests at a time")] = 4,
) -> None:
    """Predict one input (--input) or a JSON Lines file of them (--file).

    Answers are JSON on stdout, or in the --out file with a progress bar: one a line for a file, in input
    order, a failed input holding its problem as "error" (exit status 1 if any failed)."""
    if (input is None) == (file is None):
        fail(USAGE, "give one input with --input '{...}' or a file of them with --file inputs.jsonl")
    if out is not None and file is None:
        fail(USAGE, "--out is for the predictions of a --file")
    options: dict[str, Any] = {"version": version, "alias": alias}
    if confidence:
        options["include_confidence"] = True
    if input is not None:
        value = _json_option(input, "--input")
        numbers = isinstance(value, list) and all(isinstance(v, int | float) for v in value)
        if not isinstance(value, dict) and not numbers:
            fail(USAGE, "--input: give one object of features (or a list of numbers); many go in a --file")
        with connect(url, token, tenant) as client:
            answer = client.predict(model_id(client, model), value, **options)
        print_json(_answer(answer))
        return
    assert file is not None
    inputs = _read_inputs(file)
    with connect(url, token, tenant) as client:
        outcomes = client.batch_predict(
            model_id(client, model),
            inputs,
            chunk_size=chunk_size,
            concurrency=concurrency,
            progress=out is not None,
            errors="return",
            **options,
        )
    lines = "".join(json.dumps(_answer(o)) + "\n" for o in outcomes)
    failed = sum(isinstance(o, ProblemError) for o in outcomes)
    if out is None:
        typer.echo(lines, nl=False)
    else:
        out.write_text(lines)
        typer.echo(f"wrote {len(outcomes)} predictions to {out}", err=True)
    if failed:
        first = next(i for i, o in enumerate(outcomes) if isinstance(o, ProblemError))
        fail(
            PROBLEM,
            f"{failed} of {len(outcomes)} inputs failed, the first at line {first + 1} of the answers",
        )
