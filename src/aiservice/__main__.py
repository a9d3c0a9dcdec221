"""``python -m aiservice`` is the ``aiservice`` command."""

from aiservice.interfaces.cli.main import app

if __name__ == "__main__":  # worker processes re-import this module as __mp_main__
    app()
