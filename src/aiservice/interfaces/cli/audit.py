"""``aiservice audit verify``: walk every tenant's audit chain in the database and say where it breaks;
``aiservice audit list``: a tenant's audit log through the API (for its admins)."""

from __future__ import annotations

import itertools
from typing import Annotated, Any

import typer

from aiservice.client._core import api, paged  # the SDK has no audit resource: its paging, as is
from aiservice.interfaces.cli.client import TenantOption, TokenOption, UrlOption, connect
from aiservice.interfaces.cli.output import Format, OutputOption, table
from aiservice.settings import ConfigurationError, Settings

audit_app = typer.Typer(help="Read and check the audit log.", no_args_is_help=True)


@audit_app.command("list")
def list_records(
    url: UrlOption = None,
    token: TokenOption = None,
    tenant: TenantOption = None,
    action: Annotated[str | None, typer.Option(help="An action, or a prefix ending in *: model.*")] = None,
    principal: Annotated[str | None, typer.Option(help="The caller's subject")] = None,
    outcome: Annotated[str | None, typer.Option(help="success, denied or failed")] = None,
    resource: Annotated[str | None, typer.Option(help="A resource id or name")] = None,
    since: Annotated[str | None, typer.Option(help="From this time (ISO 8601 with a zone)")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many")] = 50,
    output: OutputOption = Format.table,
) -> None:
    """The tenant's audit log, newest first (an admin's token)."""
    params = {
        "action": action,
        "principal": principal,
        "outcome": outcome,
        "resource": resource,
        "since": since,
        "limit": min(limit, 100),
    }
    with connect(url, token, tenant) as client:
        pager = paged("GET", api("audit"), params)
        records: list[dict[str, Any]] = list(itertools.islice(client._iterate(pager, dict), limit))
    rows = [
        (
            r["seq"],
            r["at"],
            r["action"],
            r["outcome"],
            r.get("subject"),
            (r.get("resource") or {}).get("name") or (r.get("resource") or {}).get("id"),
            r.get("reason"),
        )
        for r in records
    ]
    headers = ("seq", "at", "action", "outcome", "subject", "resource", "reason")
    table(output, headers, rows, records)


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
