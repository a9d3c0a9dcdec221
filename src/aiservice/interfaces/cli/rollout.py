"""``aiservice deployments`` (and ``deploy``, its create) and ``aiservice experiments``: putting versions
in front of traffic, through the SDK (``aiservice.client``) against a running service."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from aiservice.client import Client, Deployment, Experiment
from aiservice.interfaces.cli.client import TenantOption, TokenOption, UrlOption, YesOption, connect, resolve
from aiservice.interfaces.cli.exits import EPILOG, USAGE, fail
from aiservice.interfaces.cli.output import Format, OutputOption, print_json, sheet, table
from aiservice.interfaces.cli.training import model_id

deployments_app = typer.Typer(
    help="Deployments: a model version served by replicas.", no_args_is_help=True, epilog=EPILOG
)
experiments_app = typer.Typer(
    help="Experiments: A/B tests, canaries and bandits between versions.", no_args_is_help=True, epilog=EPILOG
)
DeploymentArgument = Annotated[
    str, typer.Argument(help="The deployment's name (or a unique start of its id)")
]
ExperimentArgument = Annotated[
    str, typer.Argument(help="The experiment's id (or a unique start of it), or its name")
]


def deployment_name(client: Client, given: str) -> str:
    return resolve(
        given,
        "deployment",
        client.deployments.list(),
        lambda d: d.id,
        key=lambda d: d.name,
        names=lambda d: d.name,
    )


def experiment_id(client: Client, given: str) -> str:
    return resolve(given, "experiment", client.experiments.list(), lambda e: e.id, names=lambda e: e.name)


def _show_deployment(output: Format, d: Deployment) -> None:
    sheet(
        output,
        d.raw,
        [
            ("id", d.id),
            ("name", d.name),
            ("model", d.model_id),
            ("status", d.status),
            ("version", d.version),
            ("serving version", d.serving_version),
            ("revision", d.revision),
            ("environment", d.environment),
            ("target", d.target),
            ("replicas", d.replicas),
            ("endpoints", d.endpoints),
            ("reason", d.reason),
        ],
    )


# Deployments


def deploy(
    model: Annotated[str, typer.Argument(help="The model's name or id (or a unique start of the id)")],
    name: Annotated[str, typer.Argument(help="The deployment's name (lowercase letters, digits, '-')")],
    url: UrlOption = None,
    token: TokenOption = None,
    tenant: TenantOption = None,
    version: Annotated[int | None, typer.Option(help="Serve this version")] = None,
    alias: Annotated[str | None, typer.Option(help="Or the version this alias or stage names")] = None,
    environment: Annotated[str | None, typer.Option(help="development, staging or production")] = None,
    target: Annotated[str | None, typer.Option(help="local, docker or kubernetes")] = None,
    min_replicas: Annotated[int | None, typer.Option(min=0)] = None,
    max_replicas: Annotated[int | None, typer.Option(min=1)] = None,
    output: OutputOption = Format.table,
) -> None:
    """Deploy a model version (default: its production version) under a name."""
    with connect(url, token, tenant) as client:
        created = client.deployments.create(
            model_id(client, model),
            name,
            version=version,
            alias=alias,
            environment=environment,
            target=target,
            min_replicas=min_replicas,
            max_replicas=max_replicas,
        )
    _show_deployment(output, created)


deployments_app.command("create")(deploy)


@deployments_app.command("list")
def list_deployments(
    url: UrlOption = None,
    token: TokenOption = None,
    tenant: TenantOption = None,
    model: Annotated[str | None, typer.Option(help="Only this model's (name or id)")] = None,
    status: Annotated[str | None, typer.Option(help="pending, available, degraded, failed...")] = None,
    environment: Annotated[str | None, typer.Option(help="development, staging or production")] = None,
    output: OutputOption = Format.table,
) -> None:
    """The tenant's deployments."""
    with connect(url, token, tenant) as client:
        chosen = model_id(client, model) if model else None
        found = list(client.deployments.list(model=chosen, status=status, environment=environment))
    rows = [
        (d.id, d.name, d.model_id, d.status, d.version, d.serving_version, d.environment, d.replicas)
        for d in found
    ]
    headers = ("id", "name", "model", "status", "version", "serving", "environment", "replicas")
    table(output, headers, rows, [d.raw for d in found])


@deployments_app.command("show")
def show_deployment(
    deployment: DeploymentArgument,
    url: UrlOption = None,
    token: TokenOption = None,
    tenant: TenantOption = None,
    output: OutputOption = Format.table,
) -> None:
    """One deployment: its status, versions, replicas and endpoints."""
    with connect(url, token, tenant) as client:
        found = client.deployments.get(deployment_name(client, deployment))
    _show_deployment(output, found)


@deployments_app.command("rollback")
def rollback_deployment(
    deployment: DeploymentArgument,
    url: UrlOption = None,
    token: TokenOption = None,
    tenant: TenantOption = None,
    output: OutputOption = Format.table,
) -> None:
    """Go back to the deployment's previous revision."""
    with connect(url, token, tenant) as client:
        back = client.deployments.rollback(deployment_name(client, deployment))
    if output is Format.json:
        print_json(back.raw)
    else:
        typer.echo(f"deployment {back.name}: back to version {back.version} (revision {back.revision})")


@deployments_app.command("delete")
def delete_deployment(
    deployment: DeploymentArgument,
    url: UrlOption = None,
    token: TokenOption = None,
    tenant: TenantOption = None,
    yes: YesOption = False,
) -> None:
    """Stop serving and remove a deployment."""
    with connect(url, token, tenant) as client:
        name = deployment_name(client, deployment)
        if not yes:
            typer.confirm(f"delete deployment {name}?", abort=True)
        client.deployments.delete(name)
    typer.echo(f"deleted deployment {name}")


# Experiments


def _arm(text: str) -> dict[str, Any]:
    """``NAME=VERSION`` or ``NAME=@ALIAS``, optionally ``:WEIGHT``: ``A=@champion``, ``B=2:0.2``."""
    name, sep, rest = text.partition("=")
    what, _, weight = rest.partition(":")
    if not sep or not name or not what:
        fail(USAGE, f"--arm {text!r}: use NAME=VERSION or NAME=@ALIAS, optionally :WEIGHT (B=2:0.5)")
    arm: dict[str, Any] = {"name": name}
    if what.startswith("@"):
        arm["alias"] = what[1:]
    elif what.isdigit():
        arm["version"] = int(what)
    else:
        fail(USAGE, f"--arm {text!r}: {what!r} is neither a version number nor @alias")
    if weight:
        try:
            arm["weight"] = float(weight)
        except ValueError:
            fail(USAGE, f"--arm {text!r}: the weight {weight!r} is not a number")
    return arm


def _reference(reference: Any) -> str:
    """An arm's version as ``--arm`` takes it: ``2``, or ``@champion`` for an alias or stage."""
    return str(reference) if isinstance(reference, int) else f"@{reference}"


def _show_experiment(output: Format, e: Experiment) -> None:
    arms = [f"{a.get('name')}={_reference(a.get('reference'))}" for a in e.arms]
    sheet(
        output,
        e.raw,
        [
            ("id", e.id),
            ("name", e.name),
            ("model", e.model_id),
            ("mode", e.mode),
            ("status", e.status),
            ("arms", arms),
            ("champion", e.champion),
            ("weights", e.weights),
            ("winner", e.winner),
            ("reason", e.reason),
        ],
    )


@experiments_app.command("list")
def list_experiments(
    url: UrlOption = None,
    token: TokenOption = None,
    tenant: TenantOption = None,
    model: Annotated[str | None, typer.Option(help="Only this model's (name or id)")] = None,
    status: Annotated[str | None, typer.Option(help="draft, running, paused, completed or stopped")] = None,
    mode: Annotated[str | None, typer.Option(help="ab, canary, shadow or bandit")] = None,
    output: OutputOption = Format.table,
) -> None:
    """The tenant's experiments."""
    with connect(url, token, tenant) as client:
        chosen = model_id(client, model) if model else None
        found = list(client.experiments.list(model=chosen, status=status, mode=mode))
    rows = [(e.id, e.name, e.model_id, e.mode, e.status, e.champion, e.winner) for e in found]
    headers = ("id", "name", "model", "mode", "status", "champion", "winner")
    table(output, headers, rows, [e.raw for e in found])


@experiments_app.command("show")
def show_experiment(
    experiment: ExperimentArgument,
    url: UrlOption = None,
    token: TokenOption = None,
    tenant: TenantOption = None,
    output: OutputOption = Format.table,
) -> None:
    """One experiment: its arms, traffic weights and outcome."""
    with connect(url, token, tenant) as client:
        found = client.experiments.get(experiment_id(client, experiment))
    _show_experiment(output, found)


@experiments_app.command("create")
def create_experiment(
    name: Annotated[str, typer.Argument(help="A name for it")],
    model: Annotated[str, typer.Option(help="The model's name or id")],
    arm: Annotated[
        list[str], typer.Option(help="NAME=VERSION or NAME=@ALIAS, optionally :WEIGHT; repeat for each arm")
    ],
    url: UrlOption = None,
    token: TokenOption = None,
    tenant: TenantOption = None,
    mode: Annotated[str | None, typer.Option(help="ab (default), canary, shadow or bandit")] = None,
    champion: Annotated[str | None, typer.Option(help="The arm serving today (default: the first)")] = None,
    output: OutputOption = Format.table,
) -> None:
    """A draft experiment between versions of a model (`experiments start` routes traffic by it)."""
    arms = [_arm(a) for a in arm]
    options = {k: v for k, v in {"mode": mode, "champion": champion}.items() if v is not None}
    with connect(url, token, tenant) as client:
        created = client.experiments.create(name, model_id(client, model), arms, **options)
    _show_experiment(output, created)


def _action(verb: str, doc: str) -> None:
    def act(
        experiment: ExperimentArgument,
        url: UrlOption = None,
        token: TokenOption = None,
        tenant: TenantOption = None,
        output: OutputOption = Format.table,
    ) -> None:
        with connect(url, token, tenant) as client:
            done: Experiment = getattr(client.experiments, verb)(experiment_id(client, experiment))
        if output is Format.json:
            print_json(done.raw)
        else:
            typer.echo(f"experiment {done.name} {done.id}: {done.status}")

    act.__doc__ = doc
    experiments_app.command(verb)(act)


_action("start", "Route the model's predictions by the experiment.")
_action("pause", "Send all traffic to the champion for now.")
_action("resume", "Route by the experiment again.")
_action("stop", "End it without a winner.")


@experiments_app.command("promote")
def promote_experiment(
    experiment: ExperimentArgument,
    url: UrlOption = None,
    token: TokenOption = None,
    tenant: TenantOption = None,
    arm: Annotated[
        str | None, typer.Option(help="The arm to promote (default: the verdict's winner)")
    ] = None,
    output: OutputOption = Format.table,
) -> None:
    """End it by promoting an arm: the model's champion alias then points at its version."""
    with connect(url, token, tenant) as client:
        done = client.experiments.promote(experiment_id(client, experiment), arm)
    if output is Format.json:
        print_json(done.raw)
    else:
        typer.echo(f"experiment {done.name} {done.id}: {done.status}, winner {done.winner}")


@experiments_app.command("results")
def experiment_results(
    experiment: ExperimentArgument,
    url: UrlOption = None,
    token: TokenOption = None,
    tenant: TenantOption = None,
    output: OutputOption = Format.table,
) -> None:
    """Each arm's figures and the verdict."""
    with connect(url, token, tenant) as client:
        results = client.experiments.results(experiment_id(client, experiment))
    if output is Format.json:
        print_json(results.raw)
        return
    rows = []
    for name, figures in results.arms.items():
        arm = figures if isinstance(figures, dict) else {}
        rows.append(
            (
                name,
                "yes" if arm.get("champion") else "",
                arm.get("requests"),
                arm.get("errorRate"),
                arm.get("metric"),
                arm.get("ci"),
                arm.get("shadowRequests"),
            )
        )
    headers = ("arm", "champion", "requests", "error rate", "metric", "interval", "shadow requests")
    table(output, headers, rows, [])
    verdict = results.verdict
    shown = {k: verdict.get(k) for k in ("verdict", "winner", "pValue", "difference", "test")}
    typer.echo("verdict: " + ", ".join(f"{k} {v}" for k, v in shown.items() if v not in (None, "")))


@experiments_app.command("delete")
def delete_experiment(
    experiment: ExperimentArgument,
    url: UrlOption = None,
    token: TokenOption = None,
    tenant: TenantOption = None,
) -> None:
    """Delete an experiment that is not running."""
    with connect(url, token, tenant) as client:
        chosen = experiment_id(client, experiment)
        client.experiments.delete(chosen)
    typer.echo(f"deleted experiment {chosen}")
