"""Keys and secrets from the settings: the JWT signing secret, identity providers' keys, and the master
keys of encryption at rest."""

from __future__ import annotations

from pathlib import Path

from aiservice.application.ports import (
    TokenService,
)
from aiservice.infrastructure.auth.jwks import JwksKeySet, jwks_from_file, jwks_from_url
from aiservice.infrastructure.auth.jwt_tokens import JwtTokenService
from aiservice.infrastructure.auth.secret_file import load_or_create_secret, read_secret
from aiservice.infrastructure.db.engine import create_engine
from aiservice.infrastructure.db.webhook_repositories import (
    rewrap_webhook_secrets,
)
from aiservice.infrastructure.storage.encrypted import (
    EncryptedArtifactStore,
    RotationReport,
)
from aiservice.infrastructure.storage.keys import KeyConfigError, Keyring, generate_key, load_keyring
from aiservice.infrastructure.storage.local import LocalArtifactStore
from aiservice.infrastructure.storage.s3 import S3ArtifactStore
from aiservice.settings import ConfigurationError, Settings


def master_keys(settings: Settings) -> Keyring | None:
    """The master keys of encryption at rest (artifacts, webhook secrets); None when it is off."""
    secret = settings.artifact_encryption_key
    listed = settings.artifact_encryption_keys
    try:
        return load_keyring(
            secret.get_secret_value() if secret else None,
            listed.get_secret_value() if listed else None,
            settings.artifact_encryption_key_file,
        )
    except KeyConfigError as exc:
        raise ConfigurationError(str(exc)) from None


def artifact_store(settings: Settings) -> LocalArtifactStore | S3ArtifactStore | EncryptedArtifactStore:
    """The local or S3 store, wrapped to encrypt at rest when a master key is configured."""
    from aiservice.bootstrap.backends import artifact_backend  # backends imports this module

    store = artifact_backend(settings)
    keys = master_keys(settings)
    if keys is None:
        return store
    return EncryptedArtifactStore(store, keys, plaintext_ttl_seconds=settings.artifact_plaintext_ttl_seconds)


def rotate_artifact_keys(settings: Settings) -> tuple[str, RotationReport, RotationReport]:
    """Re-wrap every artifact's data key and every webhook's signing secret under the current master
    key: (its id, what was done to artifacts, what was done to webhook secrets)."""
    store = artifact_store(settings)
    if not isinstance(store, EncryptedArtifactStore):
        raise ConfigurationError(
            "No ARTIFACT_ENCRYPTION_KEY, ARTIFACT_ENCRYPTION_KEYS or ARTIFACT_ENCRYPTION_KEY_FILE is set: "
            "nothing to rotate."
        )
    engine = create_engine(settings.resolved_database_url)
    try:
        secrets = rewrap_webhook_secrets(engine, store.keys)
    finally:
        engine.dispose()
    return store.keys.current.id, store.rotate(), secrets


def new_master_key() -> tuple[str, str]:
    """A random master key for artifact encryption: (base64, id)."""
    return generate_key()


def signing_secret(settings: Settings) -> tuple[str, bool, bool]:
    """(secret, generated into DATA_DIR, created just now)."""
    if settings.jwt_secret is not None:
        return settings.jwt_secret.get_secret_value(), False, False
    if settings.environment == "production":
        raise ConfigurationError("JWT_SECRET must be set when ENVIRONMENT=production.")
    secret, created = load_or_create_secret(settings.secret_file)
    return secret, True, created


def token_service(settings: Settings) -> tuple[TokenService, str]:
    """Tokens signed with the server's own secret, and where it came from (``JWT_SECRET`` or the file).

    Unlike the server's start, this never creates a secret file: one made here, in a folder the server
    does not use, would sign tokens the server rejects. With neither, a ConfigurationError says which
    file was looked for."""
    if settings.jwt_secret is not None:
        return jwt_service(settings, settings.jwt_secret.get_secret_value()), "JWT_SECRET"
    if settings.environment == "production":
        raise ConfigurationError("JWT_SECRET must be set when ENVIRONMENT=production.")
    path = settings.secret_file.resolve()
    secret = read_secret(path)
    if not secret:
        raise ConfigurationError(
            f"no signing secret: {path} {'is empty' if secret == '' else 'does not exist'} and JWT_SECRET "
            "is not set. The server writes that file on its first start: run this in the server's folder, "
            "or set DATA_DIR to the server's data folder, or JWT_SECRET to its secret."
        )
    return jwt_service(settings, secret), str(path)


def jwt_service(settings: Settings, secret: str) -> JwtTokenService:
    return JwtTokenService(
        secret,
        settings.jwt_leeway_seconds,
        keys=jwks(settings),
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
    )


def jwks(settings: Settings) -> JwksKeySet | None:
    """The identity provider's public keys, when JWT_JWKS_URL or JWT_JWKS_FILE names them."""
    if settings.jwt_jwks_url and settings.jwt_jwks_file:
        raise ConfigurationError("Set JWT_JWKS_URL or JWT_JWKS_FILE, not both.")
    if settings.jwt_jwks_url:
        fetch, source = jwks_from_url(settings.jwt_jwks_url), settings.jwt_jwks_url
    elif settings.jwt_jwks_file:
        fetch, source = jwks_from_file(Path(settings.jwt_jwks_file)), settings.jwt_jwks_file
    else:
        return None
    return JwksKeySet(
        fetch,
        source,
        ttl_s=settings.jwt_jwks_cache_seconds,
        min_refetch_s=settings.jwt_jwks_min_refetch_seconds,
    )
