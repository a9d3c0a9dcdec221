"""Where the CLI keeps what ``aiservice login`` stored (the service's URL, the tenant, the token), and how a
command's connection is settled: a flag (or its ``AISERVICE_*`` variable, read by Typer) wins over the
stored login, which wins over the defaults.

The file is ``$AISERVICE_CONFIG``, else ``$XDG_CONFIG_HOME/aiservice/config.toml``, else
``~/.config/aiservice/config.toml``; it holds a token, so it is written with mode 0600 in a 0700 folder.
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_URL = "http://127.0.0.1:3004"
DEFAULT_TENANT = "default"
_KEYS = ("url", "tenant", "token")


class CliEnvironment(BaseSettings):
    """The environment the CLI's own files depend on (the service's are in ``aiservice.settings``)."""

    model_config = SettingsConfigDict(extra="ignore", env_ignore_empty=True)

    aiservice_config: Path | None = None
    xdg_config_home: Path | None = None

    @property
    def config_file(self) -> Path:
        if self.aiservice_config is not None:
            return self.aiservice_config.expanduser()
        base = self.xdg_config_home if self.xdg_config_home else Path.home() / ".config"
        return base.expanduser() / "aiservice" / "config.toml"


@dataclass(frozen=True)
class Login:
    url: str | None = None
    tenant: str | None = None
    token: str | None = None


def config_file() -> Path:
    return CliEnvironment().config_file


def load() -> Login:
    """What ``aiservice login`` stored; nothing when there is no file. An unreadable file raises
    ``ValueError`` naming it."""
    path = config_file()
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        return Login()
    except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from exc
    values = {k: data[k] for k in _KEYS if isinstance(data.get(k), str) and data[k]}
    return Login(**values)


def save(login: Login) -> Path:
    """Write ``login`` to the config file (mode 0600, its folder 0700), replacing what was there."""
    path = config_file()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    lines = [f"{key} = {json.dumps(value)}\n" for key in _KEYS if (value := getattr(login, key))]
    # Created 0600 before anything is written, so the token is never readable by others, even briefly.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write("# written by `aiservice login`; holds an API token\n" + "".join(lines))
    return path


def forget() -> Path | None:
    """Remove the config file; the path removed, or None when there was none."""
    path = config_file()
    try:
        path.unlink()
    except FileNotFoundError:
        return None
    return path
