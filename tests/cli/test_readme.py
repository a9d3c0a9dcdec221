"""The README's "Command line" section names only commands that exist: each one it shows answers --help."""

from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from aiservice.interfaces.cli.main import app

README = Path(__file__).resolve().parents[2] / "README.md"


def commands() -> set[tuple[str, ...]]:
    section = README.read_text().split("## Command line", 1)[1].split("\n## ", 1)[0]
    found: set[tuple[str, ...]] = set()
    for line in re.findall(r"^(?:\$ )?aiservice (.+)$", section, re.M):
        words = line.split()
        if words[0].startswith("-"):
            continue
        found.add((words[0],))
        if len(words) > 1 and re.fullmatch(r"[a-z][a-z-]*(\|[a-z][a-z-]*)*", words[1]):
            found.update((words[0], sub) for sub in words[1].split("|"))
    return found


def test_every_command_the_readme_shows_exists() -> None:
    shown = commands()
    assert {("login",), ("predict",), ("versions", "upload"), ("experiments", "results")} <= shown
    for command in sorted(shown):
        result = CliRunner().invoke(app, [*command, "--help"])
        assert result.exit_code == 0, (command, result.output)
