"""Master keys for envelope encryption: a current key that wraps new data keys, and older ones kept only
to unwrap what they wrapped before a rotation.

Configuration (one source; see ``.env.example``):

* ``ARTIFACT_ENCRYPTION_KEY``: one base64 key of 32 bytes;
* ``ARTIFACT_ENCRYPTION_KEYS``: ``id:base64,id:base64`` (the first is current; ``id:`` may be left
  out, the id is then the key's fingerprint);
* ``ARTIFACT_ENCRYPTION_KEY_FILE``: a file holding either one base64 key, or JSON
  ``{"current": "2026-11", "keys": {"2026-11": "<base64>", "2026-01": "<base64>"}}``.

A key without a name is known by its fingerprint (``fp-`` and 16 hex digits of a SHA-256 over a
label and the key), so the same key keeps its id however it is configured.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap, aes_key_wrap

from aiservice.domain.errors import ArtifactCorrupt

KEY_BYTES = 32
_KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class KeyConfigError(ValueError):
    """The configured master keys cannot be used (the message names the setting, never a key)."""


@dataclass(frozen=True)
class MasterKey:
    id: str
    secret: bytes  # never logged: the dataclass repr hides it

    def __repr__(self) -> str:
        return f"MasterKey(id={self.id!r})"


def fingerprint(secret: bytes) -> str:
    return "fp-" + hashlib.sha256(b"aiservice master key id\x00" + secret).hexdigest()[:16]


def generate_key() -> tuple[str, str]:
    """A new random master key: (base64, its fingerprint id)."""
    secret = os.urandom(KEY_BYTES)
    return base64.b64encode(secret).decode(), fingerprint(secret)


def decode_key(text: str, source: str) -> bytes:
    try:
        secret = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise KeyConfigError(f"{source}: a key is not valid base64") from None
    if len(secret) != KEY_BYTES:
        raise KeyConfigError(f"{source}: a key must be {KEY_BYTES} bytes, base64-encoded")
    return secret


class Keyring:
    """Master keys by id; ``current`` wraps every new or rotated data key."""

    def __init__(self, current: MasterKey, older: list[MasterKey] | tuple[MasterKey, ...] = ()) -> None:
        self.current = current
        self._keys = {k.id: k for k in (*older, current)}

    @property
    def ids(self) -> list[str]:
        return sorted(self._keys)

    def wrap(self, data_key: bytes) -> tuple[str, bytes]:
        """(id of the current key, ``data_key`` wrapped under it with AES key wrap, RFC 3394)."""
        return self.current.id, aes_key_wrap(self.current.secret, data_key)

    def unwrap(self, key_id: str, wrapped: bytes) -> bytes:
        master = self._keys.get(key_id)
        if master is None:
            raise ArtifactCorrupt(
                f"The artifact's data key is wrapped by master key {key_id!r}, which is not configured.",
                extra={"keyId": key_id},
            )
        try:
            return aes_key_unwrap(master.secret, wrapped)
        except InvalidUnwrap:
            raise ArtifactCorrupt(
                f"The artifact's data key does not unwrap under master key {key_id!r}: wrong key or "
                "tampered envelope.",
                extra={"keyId": key_id},
            ) from None


def _entry(text: str, source: str) -> MasterKey:
    key_id, sep, encoded = text.strip().rpartition(":")
    secret = decode_key(encoded, source)
    if sep and not _KEY_ID.fullmatch(key_id):
        raise KeyConfigError(f"{source}: key ids are 1-64 letters, digits, '.', '_' or '-'")
    return MasterKey(key_id if sep else fingerprint(secret), secret)


def parse_key_list(text: str, source: str = "ARTIFACT_ENCRYPTION_KEYS") -> Keyring:
    keys = [_entry(part, source) for part in text.split(",") if part.strip()]
    if not keys:
        raise KeyConfigError(f"{source}: no key given")
    if len({k.id for k in keys}) != len(keys):
        raise KeyConfigError(f"{source}: two keys share one id")
    return Keyring(keys[0], keys[1:])


def read_key_file(path: Path) -> Keyring:
    source = f"ARTIFACT_ENCRYPTION_KEY_FILE ({path})"
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise KeyConfigError(f"{source}: cannot be read ({exc.strerror})") from None
    if not text.lstrip().startswith("{"):
        return parse_key_list(text, source)
    try:
        data = json.loads(text)
        current_id = data["current"]
        named = [MasterKey(str(kid), decode_key(str(value), source)) for kid, value in data["keys"].items()]
    except (json.JSONDecodeError, KeyError, AttributeError, TypeError):
        raise KeyConfigError(f"{source}: expected {{'current': ID, 'keys': {{ID: BASE64, ...}}}}") from None
    by_id = {k.id: k for k in named}
    if current_id not in by_id:
        raise KeyConfigError(f"{source}: the current key {current_id!r} is not among its keys")
    for key in named:
        if not _KEY_ID.fullmatch(key.id):
            raise KeyConfigError(f"{source}: key ids are 1-64 letters, digits, '.', '_' or '-'")
    return Keyring(by_id[current_id], [k for k in named if k.id != current_id])


def load_keyring(single: str | None, listed: str | None, file: Path | None) -> Keyring | None:
    """The configured keyring, or None when encryption at rest is off (no key configured)."""
    given = [name for name, value in (("KEY", single), ("KEYS", listed), ("KEY_FILE", file)) if value]
    if len(given) > 1:
        raise KeyConfigError(
            "Set only one of ARTIFACT_ENCRYPTION_KEY, ARTIFACT_ENCRYPTION_KEYS and "
            "ARTIFACT_ENCRYPTION_KEY_FILE"
        )
    if single:
        return parse_key_list(single, "ARTIFACT_ENCRYPTION_KEY")
    if listed:
        return parse_key_list(listed)
    if file:
        return read_key_file(file)
    return None
