"""The CLI's exit statuses, and the one way a command fails: one line on stderr, then that status.

Scripts branch on the status (retry when the server is down, fetch a new token when it is refused),
so each kind of failure keeps its number; the line says what to do about it.
"""

from __future__ import annotations

from typing import NoReturn

import typer

PROBLEM = 1  # the service answered with a problem (a 404, a 422...), or the command's own check failed
USAGE = 2  # called wrongly: an option, a missing token or secret, an ambiguous id prefix (click's own code)
UNREACHABLE = 3  # the service could not be reached at the URL
REFUSED = 4  # the service refused the credentials (401) or the action (403)

EPILOG = (
    "Exit status: 0 done; 1 the service answered with a problem (a 404, a 422...); 2 usage (a bad "
    "option, no token, no signing secret, an ambiguous id prefix); 3 the service cannot be reached; "
    "4 the service refused the token (401 or 403)."
)


def fail(status: int, message: str) -> NoReturn:
    """Print ``error: message`` as one line on stderr and exit with ``status``."""
    typer.echo(f"error: {' '.join(message.split())}", err=True)
    raise typer.Exit(status)
