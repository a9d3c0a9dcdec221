"""``aiservice audit list``: the tenant's audit log through the API, for its admins."""

from __future__ import annotations

import json

from aiservice.bootstrap import Container
from tests.cli.conftest import Run, error_line


def test_the_audit_log_lists_what_was_done_newest_first(cli: Run, container: Container) -> None:
    cli("models", "create", "iris", "--framework", "sklearn")
    cli("models", "delete", "iris", "--yes")
    records = json.loads(cli("audit", "list", "--action", "model.*", "-o", "json").stdout)
    assert [(r["action"], r["outcome"], r["subject"]) for r in records][:2] == [
        ("model.delete", "success", "cli-user"),
        ("model.create", "success", "cli-user"),
    ]
    assert "model.create" in cli("audit", "list").stdout

    editor = container.tokens.issue("editor", "acme", ["editor"], 3600)
    refused = cli("audit", "list", "--token", editor)
    assert refused.exit_code == 4 and error_line(refused).startswith("error: 403 ")
    invalid = cli("audit", "list", "--outcome", "maybe")
    assert invalid.exit_code == 1 and "query.outcome" in error_line(invalid)
