"""``/models/{model}/versions`` and ``/aliases``: uploads, downloads, stages, aliases; and ``/resolve``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Request, Response, status
from starlette.concurrency import run_in_threadpool

from aiservice.interfaces.http.deps import CallerDep, PageCursor, PageLimit, VersionsDep
from aiservice.interfaces.http.downloads import ARTIFACT_CONTENT, RangeNotSatisfiable, artifact_response
from aiservice.interfaces.http.paths import API_PREFIX, VersionNumber
from aiservice.interfaces.http.schemas import (
    AliasOut,
    AliasSet,
    ModelOut,
    PageOut,
    ResolvedOut,
    StageChange,
    VersionOut,
)
from aiservice.interfaces.http.uploads import openapi_body, receive_version

router = APIRouter(prefix=API_PREFIX, tags=["versions"])


_UPLOAD_BODY = openapi_body(
    "The artifact, or a zip/tar of a folder",
    metadata={
        "type": "string",
        "description": 'JSON object: {"description", "metrics", "params", "sourceRun"}',
    },
)


@router.post(
    "/models/{model}/versions",
    status_code=status.HTTP_201_CREATED,
    response_model=VersionOut,
    openapi_extra=_UPLOAD_BODY,
    summary="Upload a new version (multipart: file, metadata)",
)
async def upload_version(
    model: str, request: Request, caller: CallerDep, versions: VersionsDep, response: Response
) -> VersionOut:
    version = await receive_version(request, versions, caller, model)
    response.headers["Location"] = f"/api/v1/ai/models/{version.model_id}/versions/{version.version}"
    return VersionOut.of(version)


@router.get("/models/{model}/versions", response_model=PageOut[VersionOut])
def list_versions(
    model: str,
    caller: CallerDep,
    versions: VersionsDep,
    limit: PageLimit = 50,
    cursor: PageCursor = None,
) -> PageOut[VersionOut]:
    page = versions.list_versions(caller, model, limit, cursor)
    return PageOut[VersionOut](items=[VersionOut.of(v) for v in page.items], next_cursor=page.next_cursor)


@router.get("/models/{model}/versions/{version}", response_model=VersionOut)
def get_version(model: str, version: VersionNumber, caller: CallerDep, versions: VersionsDep) -> VersionOut:
    return VersionOut.of(versions.get_version(caller, model, version))


@router.get(
    "/models/{model}/versions/{version}/artifact",
    response_class=Response,
    responses={
        200: {"content": ARTIFACT_CONTENT},
        206: {"description": "Partial content", "content": ARTIFACT_CONTENT},
    },
    summary="Download the artifact (verified against its SHA-256; ETag and Range supported)",
)
async def download_artifact(
    model: str, version: VersionNumber, request: Request, caller: CallerDep, versions: VersionsDep
) -> Response:
    found, handle = await run_in_threadpool(versions.open_artifact, caller, model, version)
    try:
        return artifact_response(request, found, handle)
    except RangeNotSatisfiable:
        handle.close()
        raise


@router.post("/models/{model}/versions/{version}/stage", response_model=VersionOut)
def set_stage(
    model: str, version: VersionNumber, body: StageChange, caller: CallerDep, versions: VersionsDep
) -> VersionOut:
    return VersionOut.of(versions.set_stage(caller, model, version, body.stage, body.archive_existing))


@router.get("/models/{model}/aliases", response_model=list[AliasOut])
def list_aliases(model: str, caller: CallerDep, versions: VersionsDep) -> list[AliasOut]:
    return [AliasOut.of(a) for a in versions.aliases(caller, model)]


@router.put("/models/{model}/aliases/{alias}", response_model=AliasOut)
def set_alias(
    model: str, alias: str, body: Annotated[AliasSet, Body()], caller: CallerDep, versions: VersionsDep
) -> AliasOut:
    return AliasOut.of(versions.set_alias(caller, model, alias, body.version))


@router.delete("/models/{model}/aliases/{alias}", status_code=status.HTTP_204_NO_CONTENT)
def delete_alias(model: str, alias: str, caller: CallerDep, versions: VersionsDep) -> Response:
    versions.delete_alias(caller, model, alias)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/resolve/{reference}", response_model=ResolvedOut, summary="Resolve name, name:3, name@alias")
def resolve(reference: str, caller: CallerDep, versions: VersionsDep) -> ResolvedOut:
    model, version = versions.resolve(caller, reference)
    return ResolvedOut(reference=reference, model=ModelOut.of(model), version=VersionOut.of(version))
