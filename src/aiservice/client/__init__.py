"""The Python SDK: ``Client`` (sync) and ``AsyncClient`` (async) for a running aiservice.

    from aiservice.client import Client

    with Client("http://localhost:8000", token=TOKEN, tenant="acme") as client:
        client.models.create("iris", "sklearn")
        client.models.upload_version("iris", fitted_estimator, progress=True)
        client.predict("iris", {"sepal_length": 5.1, ...})

It imports nothing else of the service (only httpx, and Rich for progress bars; each ML framework only
when one of its models is uploaded), so it can be installed and used far from the service.
"""

from aiservice.client.aio import AsyncClient, AsyncTrainingJob
from aiservice.client.errors import (
    AccuracyDropError,
    AiServiceError,
    AuthenticationError,
    AutoMLStudyError,
    BadRequestError,
    ConflictError,
    FieldIssue,
    IntegrityError,
    NotFoundError,
    PermissionDeniedError,
    ProblemError,
    RateLimitedError,
    RequestTimeoutError,
    ServerError,
    ServiceUnavailableError,
    ServiceUnreachableError,
    TrainingJobError,
    ValidationError,
)
from aiservice.client.studies import AsyncAutoMLStudy, AutoMLStudy
from aiservice.client.sync import Client, TrainingJob
from aiservice.client.types import (
    Alias,
    Artifact,
    Dataset,
    Deployment,
    Experiment,
    ExperimentResults,
    JobEvent,
    JobState,
    Model,
    Prediction,
    StudyState,
    Version,
)

__all__ = [
    "AccuracyDropError",
    "AiServiceError",
    "Alias",
    "Artifact",
    "AsyncAutoMLStudy",
    "AsyncClient",
    "AsyncTrainingJob",
    "AuthenticationError",
    "AutoMLStudy",
    "AutoMLStudyError",
    "BadRequestError",
    "Client",
    "ConflictError",
    "Dataset",
    "Deployment",
    "Experiment",
    "ExperimentResults",
    "FieldIssue",
    "IntegrityError",
    "JobEvent",
    "JobState",
    "Model",
    "NotFoundError",
    "PermissionDeniedError",
    "Prediction",
    "ProblemError",
    "RateLimitedError",
    "RequestTimeoutError",
    "ServerError",
    "ServiceUnavailableError",
    "ServiceUnreachableError",
    "StudyState",
    "TrainingJob",
    "TrainingJobError",
    "ValidationError",
    "Version",
]
