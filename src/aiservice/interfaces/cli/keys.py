"""``aiservice keys``: master keys for artifacts encrypted at rest (generate one, rotate to the current)."""

from __future__ import annotations

import typer

from aiservice.settings import ConfigurationError, Settings

keys_app = typer.Typer(help="Master keys for artifact encryption at rest.", no_args_is_help=True)


@keys_app.command("generate")
def generate() -> None:
    """Print a new random master key (base64) on stdout, and its fingerprint id on stderr."""
    from aiservice.bootstrap import new_master_key

    secret, key_id = new_master_key()
    typer.echo(secret)
    typer.echo(f"id: {key_id}", err=True)


@keys_app.command("rotate")
def rotate() -> None:
    """Re-wrap every artifact's data key and every webhook's signing secret under the current master
    key (artifact bodies are not rewritten).

    Make the new key current and keep the old ones listed until this reports no failure; then the
    old ones can go. Exit status 1 if anything could not be re-wrapped."""
    from aiservice.bootstrap import rotate_artifact_keys

    try:
        current, artifacts, secrets = rotate_artifact_keys(Settings())
    except ConfigurationError as exc:
        raise typer.BadParameter(str(exc)) from exc
    typer.echo(
        f"current key {current}: {artifacts.rewrapped} re-wrapped, "
        f"{artifacts.current} already current, {len(artifacts.failed)} failed"
    )
    typer.echo(
        f"webhook secrets: {secrets.rewrapped} re-wrapped, "
        f"{secrets.current} already current, {len(secrets.failed)} failed"
    )
    for key in (*artifacts.failed, *secrets.failed):
        typer.echo(f"  failed: {key}", err=True)
    if artifacts.failed or secrets.failed:
        raise typer.Exit(code=1)
