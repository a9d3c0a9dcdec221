"""``/models``: register, list, read, change and delete models."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from aiservice.application.ports import ModelQuery, ModelSort
from aiservice.application.registry import NewModel
from aiservice.domain.models import FRAMEWORK_NAME, Framework
from aiservice.interfaces.http.deps import CallerDep, PageCursor, PageLimit, RegistryDep, VersionsDep
from aiservice.interfaces.http.paths import API_PREFIX
from aiservice.interfaces.http.schemas import ModelCreate, ModelOut, ModelPatch, PageOut

router = APIRouter(prefix=f"{API_PREFIX}/models", tags=["models"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ModelOut)
def create_model(body: ModelCreate, caller: CallerDep, registry: RegistryDep, response: Response) -> ModelOut:
    model = registry.create_model(caller, NewModel(**body.model_dump()))
    response.headers["Location"] = f"/api/v1/ai/models/{model.id}"
    return ModelOut.of(model)


@router.get("", response_model=PageOut[ModelOut])
def list_models(
    caller: CallerDep,
    registry: RegistryDep,
    limit: PageLimit = 50,
    cursor: PageCursor = None,
    framework: Annotated[str | None, Query(pattern=FRAMEWORK_NAME.pattern)] = None,
    category: Annotated[str | None, Query(max_length=100)] = None,
    tag: Annotated[str | None, Query(max_length=64)] = None,
    q: Annotated[str | None, Query(max_length=200, description="Text in the name or description")] = None,
    sort: ModelSort = "-createdAt",
) -> PageOut[ModelOut]:
    page = registry.list_models(
        caller,
        ModelQuery(
            framework=Framework(framework) if framework else None,
            category=category,
            tag=tag,
            text=q,
            sort=sort,
            limit=limit,
            cursor=cursor,
        ),
    )
    return PageOut[ModelOut](items=[ModelOut.of(m) for m in page.items], next_cursor=page.next_cursor)


@router.get("/{model}", response_model=ModelOut, response_model_exclude_none=False)
def get_model(model: str, caller: CallerDep, registry: RegistryDep, versions: VersionsDep) -> ModelOut:
    found = registry.get_model(caller, model)
    return ModelOut.of(found, versions.aliases(caller, found.id))


@router.patch("/{model}", response_model=ModelOut)
def update_model(model: str, body: ModelPatch, caller: CallerDep, registry: RegistryDep) -> ModelOut:
    changes = body.model_dump(exclude_unset=True)
    return ModelOut.of(registry.update_model(caller, model, changes))


@router.delete("/{model}", status_code=status.HTTP_204_NO_CONTENT)
def delete_model(model: str, caller: CallerDep, registry: RegistryDep) -> Response:
    registry.delete_model(caller, model)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
