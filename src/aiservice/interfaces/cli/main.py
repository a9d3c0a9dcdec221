"""``aiservice``: serve the API, migrate the database, issue tokens, manage tenants; and, as a client of a
running service (through the SDK), manage models, versions, predictions, training, deployments and
experiments."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated

import typer

from aiservice import __version__
from aiservice.domain.errors import DomainError
from aiservice.domain.tenancy import Role
from aiservice.interfaces.cli.audit import audit_app
from aiservice.interfaces.cli.automl import automl_app, export, import_model, optimize
from aiservice.interfaces.cli.exits import EPILOG, USAGE, fail
from aiservice.interfaces.cli.keys import keys_app
from aiservice.interfaces.cli.registry import (
    login,
    logout,
    models_app,
    predict,
    versions_app,
    whoami,
)
from aiservice.interfaces.cli.rollout import deploy, deployments_app, experiments_app
from aiservice.interfaces.cli.serve_model import serve_model
from aiservice.interfaces.cli.training import jobs_app, train
from aiservice.settings import ConfigurationError, Settings

if TYPE_CHECKING:
    from aiservice.application.ports import TokenService
    from aiservice.bootstrap import Container

app = typer.Typer(help="aiservice: ML model registry and serving.", no_args_is_help=True, epilog=EPILOG)
token_app = typer.Typer(help="Issue API tokens.", no_args_is_help=True)
tenant_app = typer.Typer(help="Manage tenants.", no_args_is_help=True)
app.add_typer(token_app, name="token")
app.add_typer(tenant_app, name="tenant")
app.add_typer(jobs_app, name="jobs")
app.add_typer(audit_app, name="audit")
app.add_typer(keys_app, name="keys")
app.add_typer(models_app, name="models")
app.add_typer(versions_app, name="versions")
app.add_typer(deployments_app, name="deployments")
app.add_typer(experiments_app, name="experiments")
app.command("login")(login)
app.command("logout")(logout)
app.command("whoami")(whoami)
app.command("predict")(predict)
app.command("train")(train)
app.command("deploy")(deploy)
app.command("serve-model")(serve_model)
app.add_typer(automl_app, name="automl")
app.command("optimize")(optimize)
app.command("export")(export)
app.command("import")(import_model)


def _with_epilog(typer_app: typer.Typer) -> None:
    """Every command's --help ends with the exit statuses."""
    for command in typer_app.registered_commands:
        command.epilog = command.epilog or EPILOG
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            _with_epilog(group.typer_instance)


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"aiservice {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit"),
    ] = False,
) -> None:
    pass


def _bootstrap(settings: Settings) -> Container:
    # The whole service is imported by the commands that build it only: `serve`'s supervisor and
    # `--help` stay small.
    from aiservice.bootstrap import bootstrap

    return bootstrap(settings)


def _token_service(settings: Settings) -> tuple[TokenService, str]:
    from aiservice.bootstrap import token_service

    return token_service(settings)


_TTL = re.compile(r"^(\d+)([smhd]?)$")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_ttl(text: str) -> int:
    match = _TTL.match(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise typer.BadParameter("use a positive number with an optional unit: 90s, 30m, 1h, 7d")
    return int(match.group(1)) * _UNITS[match.group(2)]


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (default: HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: PORT)")] = None,
) -> None:
    """Apply migrations (unless AUTO_MIGRATE=false) and start the API."""
    from aiservice.interfaces.cli.serve import run

    settings = Settings()
    run(settings.model_copy(update={k: v for k, v in {"host": host, "port": port}.items() if v is not None}))


@app.command()
def migrate() -> None:
    """Bring the database schema to the newest migration and make sure the default tenant exists."""
    try:
        container = _bootstrap(Settings())
    except ConfigurationError as exc:
        raise typer.BadParameter(str(exc)) from exc
    try:
        container.prepare()
    finally:
        container.close()
    typer.echo(
        f"database is at the newest migration: {container.settings.resolved_database_url.split('@')[-1]}"
    )


@app.command()
def purge(
    older_than: Annotated[
        str, typer.Option(help="Erase models deleted longer ago than this: 30d, 12h")
    ] = "30d",
) -> None:
    """Erase soft-deleted models, their versions and their artifacts for good."""
    container = _bootstrap(Settings())
    try:
        report = container.versions.purge_deleted(timedelta(seconds=parse_ttl(older_than)))
    finally:
        container.close()
    typer.echo(f"purged {report.models} models and {report.artifacts} artifacts")


@token_app.command("create")
def token_create(
    tenant: Annotated[str, typer.Option(help="Tenant the token acts for")],
    role: Annotated[list[Role], typer.Option(help="Role to grant; repeat for several")],
    subject: Annotated[str, typer.Option(help="Who the token stands for (the 'sub' claim)")] = "cli",
    ttl: Annotated[str, typer.Option(help="Lifetime: 90s, 30m, 1h, 7d")] = "1h",
) -> None:
    """Print a token signed with the server's secret, alone on stdout, so scripts can capture it.

    The secret is JWT_SECRET, else the file the server generated (DATA_DIR/jwt_secret, DATA_DIR being
    ./var from the current folder); which one is said on stderr. No secret is ever created here."""
    seconds = parse_ttl(ttl)
    try:
        tokens, source = _token_service(Settings())
    except ConfigurationError as exc:
        fail(USAGE, str(exc))
    typer.echo(f"signed with {source if source == 'JWT_SECRET' else f'the secret in {source}'}", err=True)
    typer.echo(tokens.issue(subject, tenant, [r.value for r in role], seconds))


@tenant_app.command("create")
def tenant_create(
    tenant_id: Annotated[str, typer.Argument(help="Tenant id: lowercase letters, digits, '_' or '-'")],
    name: Annotated[str | None, typer.Option(help="Display name")] = None,
) -> None:
    """Create a tenant (a no-op if it exists)."""
    container = _bootstrap(Settings())
    try:
        _tenant, created = container.tenants.ensure(tenant_id, name)
    except DomainError as exc:
        raise typer.BadParameter(exc.detail) from exc
    finally:
        container.close()
    typer.echo(f"tenant {tenant_id} {'created' if created else 'already exists'}")


_with_epilog(app)  # last: after every command above is registered
