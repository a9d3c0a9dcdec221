"""``python -m aiservice`` is the ``aiservice`` command."""

from aiservice.interfaces.cli.main import app

app()
