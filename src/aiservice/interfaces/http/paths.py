"""URL prefixes and shared path parameters of the API, in one place."""

from typing import Annotated

from fastapi import Path

from aiservice.domain.models import MAX_VERSION

API_PREFIX = "/api/v1/ai"

VersionNumber = Annotated[int, Path(ge=1, le=MAX_VERSION)]
