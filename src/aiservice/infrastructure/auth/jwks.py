"""Public signing keys from a JWKS (an identity provider's URL or a local file), by ``kid``.

The set is kept for ``ttl_s`` and read again after that, so a key the provider removed stops being
accepted; a token naming an unknown ``kid`` makes it read the set again at once (a rotation), but at
most once per ``min_refetch_s``, so a flood of made-up kids cannot hammer the provider.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jwt

from aiservice.domain.errors import Unauthenticated, Unavailable

log = logging.getLogger(__name__)

# The key type each accepted asymmetric algorithm needs: a JWKS key of another type is never used for it.
KEY_TYPES = {"RS256": "RSA", "ES256": "EC"}
FETCH_TIMEOUT_S = 5.0

Fetch = Callable[[], Any]


def jwks_from_url(url: str, timeout_s: float = FETCH_TIMEOUT_S) -> Fetch:
    def fetch() -> Any:
        response = httpx.get(url, timeout=timeout_s, headers={"Accept": "application/json"})
        response.raise_for_status()
        return response.json()

    return fetch


def jwks_from_file(path: Path) -> Fetch:
    def fetch() -> Any:
        return json.loads(path.read_bytes())

    return fetch


@dataclass(frozen=True)
class _Key:
    kty: str
    alg: str | None
    key: Any  # a cryptography public key


class JwksKeySet:
    def __init__(
        self,
        fetch: Fetch,
        source: str,
        ttl_s: float = 300.0,
        min_refetch_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._fetch = fetch
        self._source = source
        self._ttl = ttl_s
        self._min_refetch = min_refetch_s
        self._clock = clock
        self._keys: dict[str, _Key] = {}
        self._loaded_at: float | None = None  # when the set was last read successfully
        self._tried_at: float | None = None  # when it was last asked for, successfully or not
        self._refresh_lock = threading.Lock()

    def ready(self, kid: str) -> bool:
        """Whether ``key(kid, ...)`` answers from memory, without reading the set."""
        return not self._would_fetch(kid)

    def key(self, kid: str, alg: str) -> Any:
        """The public key for ``kid``, usable with ``alg``; Unauthenticated if there is none."""
        if self._would_fetch(kid):
            self._refresh()
        if self._loaded_at is None:
            raise Unavailable("The token signing keys cannot be read; try again shortly.")
        found = self._keys.get(kid)
        if found is None:
            raise Unauthenticated("The token's signing key (kid) is not known.")
        if found.kty != KEY_TYPES.get(alg) or (found.alg is not None and found.alg != alg):
            raise Unauthenticated("The token's algorithm does not match its signing key.")
        return found.key

    def _would_fetch(self, kid: str) -> bool:
        now = self._clock()
        if self._tried_at is not None and now - self._tried_at < self._min_refetch:
            return False
        expired = self._loaded_at is None or now - self._loaded_at >= self._ttl
        return expired or kid not in self._keys

    def _refresh(self) -> None:
        asked_at = self._clock()
        with self._refresh_lock:
            if self._tried_at is not None and self._tried_at >= asked_at:
                return  # another thread read the set while this one waited
            self._tried_at = self._clock()
            try:
                keys = _parse(self._fetch())
            except Exception as exc:
                # Keep the keys we have (an outage of the provider must not log everyone out) and
                # try again after min_refetch_s.
                log.warning("cannot read the JWKS at %s: %s", self._source, exc)
                return
            self._keys = keys
            self._loaded_at = self._tried_at


def _parse(document: Any) -> dict[str, _Key]:
    if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
        raise ValueError("a JWKS is an object with a 'keys' list")
    keys: dict[str, _Key] = {}
    for entry in document["keys"]:
        parsed = _parse_key(entry)
        if parsed is not None:
            keys[parsed[0]] = parsed[1]
    return keys


def _parse_key(entry: Any) -> tuple[str, _Key] | None:
    """A signing key with a kid, of a type we verify with (RSA, EC); others are skipped, not fatal."""
    if not isinstance(entry, Mapping):
        return None
    kid, kty, use, alg = entry.get("kid"), entry.get("kty"), entry.get("use"), entry.get("alg")
    if not isinstance(kid, str) or kty not in KEY_TYPES.values() or use not in (None, "sig"):
        return None
    if (alg is not None and alg not in KEY_TYPES) or (kty == "EC" and entry.get("crv") != "P-256"):
        return None  # ES256 is P-256 only
    try:
        key = jwt.PyJWK(dict(entry)).key
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        log.warning("skipping JWKS key %r: %s", kid, exc)
        return None
    return kid, _Key(kty=str(kty), alg=alg, key=key)
