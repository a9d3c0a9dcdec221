"""Whether uploaded bytes can be read as the format they claim to be, before the upload is kept."""

from __future__ import annotations

from pathlib import Path

from aiservice.infrastructure.datasets.readers import check_readable, display_name


def format_problems(path: Path, format: str) -> list[str]:
    """What stops ``path`` being read as ``format``, found from its header alone; empty when readable.

    An upload names no target column (each training request does), so the readers' complaint that one
    is needed is no problem here; every other one (not csv at all, no rows, a broken parquet footer, an
    npz without ``X`` and ``y``, columns named twice) is.
    """
    needs_target = f"{display_name(str(path))}: a target column is needed"
    return [
        problem for problem in check_readable(str(path), format, None, None, {}) if problem != needs_target
    ]
