"""What the SDK raises: a problem answered by the service (RFC 9457), or a service that could not be reached.

``ProblemError`` carries the whole problem document; its subclasses let callers catch what they can act on
(``NotFoundError``, ``ValidationError`` with its ``errors``...). Every error of the SDK is an
``AiServiceError``.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

PROBLEM_BASE = "https://aiservice.dev/problems/"


@dataclass(frozen=True)
class FieldIssue:
    """One offending field of a problem: ``body.name``, ``query.limit``, ``form.file``..."""

    field: str
    message: str


class AiServiceError(Exception):
    """Anything this SDK raises about a call."""


class ProblemError(AiServiceError):
    """The service answered with an ``application/problem+json`` document (or an error status)."""

    def __init__(self, status: int, problem: Mapping[str, Any], headers: Mapping[str, str] | None = None):
        self.status = status
        self.problem: dict[str, Any] = dict(problem)
        self.headers: dict[str, str] = dict(headers or {})
        self.type: str = str(problem.get("type", "about:blank"))
        self.title: str = str(problem.get("title", ""))
        self.detail: str = str(problem.get("detail", ""))
        self.instance: str | None = problem.get("instance")
        self.request_id: str | None = problem.get("requestId")
        self.errors: list[FieldIssue] = [
            FieldIssue(str(e.get("field", "")), str(e.get("message", "")))
            for e in problem.get("errors") or ()
            if isinstance(e, Mapping)
        ]
        super().__init__(self._message())

    @property
    def code(self) -> str:
        """The problem's stable code: the last part of its ``type`` (``not-found``, ``validation-error``)."""
        return self.type.removeprefix(PROBLEM_BASE).rsplit("/", 1)[-1]

    @property
    def fields(self) -> dict[str, str]:
        """The offending fields and what is wrong with each."""
        return {e.field: e.message for e in self.errors}

    def _message(self) -> str:
        text = f"{self.status} {self.title or self.code}: {self.detail}".rstrip(": ")
        if self.errors:
            text += " [" + "; ".join(f"{e.field}: {e.message}" for e in self.errors) + "]"
        return text

    def __repr__(self) -> str:
        return f"{type(self).__name__}(status={self.status}, code={self.code!r}, detail={self.detail!r})"


class BadRequestError(ProblemError):
    """400: the request itself is malformed."""


class AuthenticationError(ProblemError):
    """401: no credential, or one the service refuses."""


class PermissionDeniedError(ProblemError):
    """403: the caller's roles or tenant do not allow it."""


class NotFoundError(ProblemError):
    """404: no such model, version, job..."""


class ConflictError(ProblemError):
    """409: the name is taken, or the state does not allow it."""


class ValidationError(ProblemError):
    """422: invalid input; ``errors`` names each offending field."""


class AccuracyDropError(ValidationError):
    """422 ``accuracy-drop-too-large``: an optimised version lost more than ``maxAccuracyDrop``; nothing was
    registered. ``optimization`` holds the figures measured (accuracy before and after, sizes...)."""

    @property
    def optimization(self) -> dict[str, Any]:
        figures = self.problem.get("optimization")
        return dict(figures) if isinstance(figures, Mapping) else {}


class RateLimitedError(ProblemError):
    """429: a rate limit or a quota; ``retry_after`` says when to try again (seconds), when known."""

    @property
    def retry_after(self) -> float | None:
        return parse_retry_after(self.headers.get("retry-after"))


class ServiceUnavailableError(ProblemError):
    """503: the service (or what it needs) is unavailable for now."""


class ServerError(ProblemError):
    """Any other 5xx."""


_BY_STATUS: dict[int, type[ProblemError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: ValidationError,
    429: RateLimitedError,
    503: ServiceUnavailableError,
}
_BY_CODE: dict[str, type[ProblemError]] = {"accuracy-drop-too-large": AccuracyDropError}


class ServiceUnreachableError(AiServiceError, builtins.ConnectionError):
    """The service could not be reached (down, wrong URL, connection cut); also a ``ConnectionError``."""

    def __init__(self, url: str, reason: str) -> None:
        self.url = url
        self.reason = reason
        super().__init__(f"cannot reach the service at {url}: {reason}")


class RequestTimeoutError(AiServiceError, builtins.TimeoutError):
    """The service did not answer within the client's timeout; also a ``TimeoutError``."""


class IntegrityError(AiServiceError):
    """A downloaded artifact does not match the digest the service names."""


class AutoMLStudyError(AiServiceError):
    """An AutoML study ended without registering a version (failed or cancelled)."""

    def __init__(self, study_id: str, status: str, error: str | None) -> None:
        self.study_id, self.status, self.error = study_id, status, error
        super().__init__(f"AutoML study {study_id} {status}" + (f": {error}" if error else ""))


class TrainingJobError(AiServiceError):
    """A training job ended without registering a version (failed or cancelled)."""

    def __init__(self, job_id: str, status: str, stage: str | None, message: str | None) -> None:
        self.job_id, self.status, self.stage, self.message = job_id, status, stage, message
        why = f" in {stage}: {message}" if message else ""
        super().__init__(f"training job {job_id} {status}{why}")


def parse_retry_after(value: str | None) -> float | None:
    """``Retry-After`` as seconds (the delay form; the service never sends a date)."""
    if not value:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def problem_error(status: int, headers: Mapping[str, str], problem: Mapping[str, Any]) -> ProblemError:
    """The exception for an error answer: by status, else a generic one (5xx as ``ServerError``)."""
    kind = _BY_STATUS.get(status) or (ServerError if status >= 500 else ProblemError)
    code = str(problem.get("type", "")).rsplit("/", 1)[-1]
    special = _BY_CODE.get(code)
    if special is not None and issubclass(special, kind):  # a code's own class, under its status's
        kind = special
    return kind(status, problem, headers)
