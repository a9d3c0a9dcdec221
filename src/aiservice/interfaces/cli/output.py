"""What the client commands print: a Rich table (or a two-column sheet for one object) for people, the
service's own JSON for scripts (``--output json``), ids always whole so they can be copied and pasted."""

from __future__ import annotations

import enum
import json
import sys
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table


class Format(enum.StrEnum):
    table = "table"
    json = "json"


OutputOption = Annotated[
    Format,
    typer.Option("--output", "-o", help="table for people, json for scripts (the service's own fields)"),
]


def console() -> Console:
    """Stdout, as wide as the terminal; 200 columns when it is a pipe, so no id is ever cut."""
    return Console(width=None if sys.stdout.isatty() else 200, highlight=False)


def print_json(data: Any) -> None:
    typer.echo(json.dumps(data, indent=2, default=str))


def cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={cell(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(cell(v) for v in value)
    return str(value)


def table(output: Format, headers: Sequence[str], rows: Sequence[Sequence[Any]], raws: list[Any]) -> None:
    """A listing: ``raws`` (the service's JSON of each row) with ``-o json``, else a table."""
    if output is Format.json:
        print_json(raws)
        return
    grid = Table(*headers)
    grid.columns[0].no_wrap = True  # the id (or name) is never wrapped or cut
    for row in rows:
        grid.add_row(*(cell(v) for v in row))
    console().print(grid)
    if not rows:
        typer.echo("(none)", err=True)


def sheet(output: Format, raw: Mapping[str, Any], fields: Sequence[tuple[str, Any]] | None = None) -> None:
    """One object: its JSON with ``-o json``, else a field/value table (``fields``, default: ``raw``)."""
    if output is Format.json:
        print_json(raw)
        return
    grid = Table("field", "value", show_header=False)
    grid.columns[0].style = "bold"
    for name, value in fields if fields is not None else raw.items():
        grid.add_row(name, cell(value))
    console().print(grid)
