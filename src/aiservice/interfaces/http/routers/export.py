"""``/models/{model}/versions/{version}/export``: a version as an edge bundle (ADR 30).

The bundle's sha256 is its strong ``ETag``; a caller that sends it back in ``If-None-Match`` gets a
304 without the body (after the same permission and version checks as a download)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query, Response, status
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.responses import FileResponse

from aiservice.interfaces.http.deps import CallerDep, ContainerDep
from aiservice.interfaces.http.paths import API_PREFIX, VersionNumber

router = APIRouter(prefix=API_PREFIX, tags=["versions"])


@router.get(
    "/models/{model}/versions/{version}/export",
    response_class=FileResponse,
    responses={
        200: {
            "content": {"application/zip": {}},
            "headers": {"ETag": {"description": "the bundle's sha256"}},
        },
        304: {"description": "The bundle is the one If-None-Match names"},
    },
    summary="Export a version as a bundle to run without the service (model, schema, README, runner)",
)
async def export_version(
    model: str,
    version: VersionNumber,
    caller: CallerDep,
    container: ContainerDep,
    format: Annotated[str, Query(description="onnx, torchscript (PyTorch) or tflite (Keras)")] = "onnx",
    if_none_match: Annotated[str | None, Header(description="ETags the caller holds")] = None,
) -> Response:
    bundle = await run_in_threadpool(container.exports.export, caller, model, version, format)
    etag = f'"{bundle.sha256}"'
    if if_none_match is not None and matches(if_none_match, etag):
        await run_in_threadpool(bundle.discard)
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers={"ETag": etag})
    return FileResponse(
        bundle.path,
        media_type="application/zip",
        filename=bundle.filename,
        headers={"ETag": etag},
        background=BackgroundTask(bundle.discard),
    )


def matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110's weak comparison, which ``If-None-Match`` uses: ``*``, or one of the listed tags
    with or without ``W/``."""
    listed = [tag.strip() for tag in if_none_match.split(",")]
    return "*" in listed or etag in (tag.removeprefix("W/") for tag in listed)
