"""``/api-keys``: credentials for machines, made by a tenant's admin; the key is shown once."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Response, status
from pydantic import AwareDatetime, Field

from aiservice.application.api_keys import NewApiKey
from aiservice.domain.api_keys import ApiKey, ApiKeyStatus
from aiservice.domain.clock import utcnow
from aiservice.interfaces.http.deps import CallerDep, ContainerDep
from aiservice.interfaces.http.paths import API_PREFIX
from aiservice.interfaces.http.schemas import ApiModel, PageOut

router = APIRouter(prefix=API_PREFIX, tags=["api-keys"])


class ApiKeyCreate(ApiModel):
    name: str = Field(min_length=1, max_length=100, examples=["nightly-scoring"])
    roles: list[str] = Field(min_length=1, max_length=10, examples=[["viewer"]])
    model_ids: list[str] | None = Field(
        default=None,
        min_length=1,
        max_length=100,
        description="Ids or names of the only models the key may use (stored as ids); omit for all",
    )
    expires_at: AwareDatetime | None = Field(default=None, description="When the key stops working")


class ApiKeyOut(ApiModel):
    id: str
    name: str
    roles: list[str]
    model_ids: list[str] | None
    status: ApiKeyStatus
    created_by: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, key: ApiKey) -> ApiKeyOut:
        return cls(
            id=key.id,
            name=key.name,
            roles=list(key.roles),
            model_ids=list(key.model_ids) if key.model_ids is not None else None,
            status=key.status(utcnow()),
            created_by=key.created_by,
            created_at=key.created_at,
            expires_at=key.expires_at,
            revoked_at=key.revoked_at,
        )


class ApiKeyCreated(ApiKeyOut):
    key: str = Field(
        description="Send as `Authorization: ApiKey <key>`. Shown only in this response: the service "
        "keeps a hash, so a lost key cannot be shown again (revoke it and make another)."
    )


@router.post(
    "/api-keys",
    status_code=status.HTTP_201_CREATED,
    response_model=ApiKeyCreated,
    summary="Make an API key for a machine (admin); the key is in this response only",
)
def create_api_key(
    body: ApiKeyCreate, caller: CallerDep, c: ContainerDep, response: Response
) -> ApiKeyCreated:
    issued = c.api_keys.create(
        caller,
        NewApiKey(name=body.name, roles=body.roles, model_ids=body.model_ids, expires_at=body.expires_at),
    )
    response.headers["Cache-Control"] = "no-store"
    return ApiKeyCreated(**ApiKeyOut.of(issued.record).model_dump(), key=issued.key)


@router.get("/api-keys", response_model=PageOut[ApiKeyOut], summary="The tenant's API keys (never the keys)")
def list_api_keys(caller: CallerDep, c: ContainerDep) -> PageOut[ApiKeyOut]:
    return PageOut[ApiKeyOut](items=[ApiKeyOut.of(k) for k in c.api_keys.list(caller)], next_cursor=None)


@router.delete(
    "/api-keys/{key_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    summary="Revoke an API key: the next request with it is refused",
)
def revoke_api_key(key_id: str, caller: CallerDep, c: ContainerDep) -> Response:
    c.api_keys.revoke(caller, key_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
