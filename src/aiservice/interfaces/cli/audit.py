"""``aiservice audit verify``: walk every tenant's audit chain in the database and say where it breaks."""

from __future__ import annotations

from typing import Annotated

import typer

from aiservice.settings import ConfigurationError, Settings

audit_app = typer.Typer(help="Check the audit log.", no_args_is_help=True)


@audit_app.command("verify")
def verify(
    tenant: Annotated[str | None, typer.Option(help="Check this tenant only (default: every tenant)")] = None,
) -> None:
    """Recompute each tenant's hash chain; exit status 1 at the first broken record."""
    from aiservice.bootstrap import bootstrap

    try:
        container = bootstrap(Settings())
    except ConfigurationError as exc:
        raise typer.BadParameter(str(exc)) from exc
    try:
        reports = container.audit.verify(tenant)
    finally:
        container.close()
    broken = False
    for report in reports:
        if report.broken is None:
            typer.echo(f"tenant {report.tenant_id}: OK ({report.records} records)")
        else:
            broken = True
            typer.echo(
                f"tenant {report.tenant_id}: BROKEN at seq {report.broken.seq}: {report.broken.problem} "
                f"({report.records} records verified before it)"
            )
    if not reports:
        typer.echo("no audit records yet")
    if broken:
        raise typer.Exit(code=1)
