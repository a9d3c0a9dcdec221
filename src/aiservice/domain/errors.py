"""Domain errors: what went wrong, in the caller's terms, never an HTTP status.

Each error carries a stable ``code`` (the problem type slug), a human ``detail`` and, for input
problems, the offending fields. The HTTP layer maps codes to statuses in one place.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class FieldError:
    """One offending field: a dotted path (``body.framework``) and what is wrong with it."""

    field: str
    message: str


class DomainError(Exception):
    """Base of every error a use case raises on purpose."""

    code = "domain-error"
    title = "Request failed"

    def __init__(
        self,
        detail: str,
        *,
        errors: list[FieldError] | None = None,
        extra: dict[str, Any] | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(detail)
        if code is not None:  # a more specific, still stable, problem type than the class's
            self.code = code
        self.detail = detail
        self.errors = errors or []
        self.extra = extra or {}


class InvalidInput(DomainError):
    code = "validation-error"
    title = "Invalid input"


class NotFound(DomainError):
    code = "not-found"
    title = "Not found"


class Conflict(DomainError):
    code = "conflict"
    title = "Conflict"


class Forbidden(DomainError):
    code = "forbidden"
    title = "Forbidden"


class Unauthenticated(DomainError):
    code = "unauthenticated"
    title = "Authentication required"


class PayloadTooLarge(DomainError):
    code = "payload-too-large"
    title = "Payload too large"


class UploadTimedOut(DomainError):
    """An upload took longer than the service allows; its bytes were not kept."""

    code = "upload-timeout"
    title = "Upload took too long"


class QuotaExceeded(DomainError):
    code = "quota-exceeded"
    title = "Quota exceeded"


class Unavailable(DomainError):
    code = "unavailable"
    title = "Service unavailable"


class PredictionFailed(DomainError):
    """The model itself failed or timed out on input that passed the schema checks."""

    code = "prediction-failed"
    title = "Prediction failed"


class ArtifactCorrupt(DomainError):
    """Stored bytes no longer match the digest recorded at upload: an operator problem."""

    code = "artifact-corrupt"
    title = "Artifact corrupt"


class InvalidArtifact(DomainError):
    """The uploaded bytes cannot be loaded as the model's framework, or do not fit its schema."""

    code = "invalid-artifact"
    title = "Invalid artifact"


class UntrustedArtifact(InvalidArtifact):
    """Loading the bytes would run code or use types we do not trust (pickle, unknown skops types)."""

    code = "untrusted-artifact"
    title = "Untrusted artifact"


class UnsafeArchive(InvalidArtifact):
    """An archive member could escape its folder (absolute path, ``..``, a link) or the archive would
    unpack past its bounds (a zip bomb); ``extra["member"]`` names the member."""

    code = "unsafe-archive"
    title = "Unsafe archive"


class RateLimited(DomainError):
    """The caller spent its request budget (token bucket) and must wait before the next call."""

    code = "rate-limited"
    title = "Too many requests"
