"""The signing secret for a development install: generated once into the data folder, mode 0600."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def read_secret(path: Path) -> str | None:
    """The secret stored at ``path``; None when there is no such file."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        return None


def load_or_create_secret(path: Path) -> tuple[str, bool]:
    """The secret stored at ``path``, created if absent; the flag says whether it was created now."""
    existing = read_secret(path)
    if existing is not None:
        return existing, False
    path.parent.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(48)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process won the race: use its secret
        return path.read_text().strip(), False
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    return value, True
