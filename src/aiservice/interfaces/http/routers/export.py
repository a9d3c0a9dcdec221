"""``/models/{model}/versions/{version}/export``: a version as an edge bundle (ADR 30)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.responses import FileResponse

from aiservice.interfaces.http.deps import CallerDep, ContainerDep
from aiservice.interfaces.http.paths import API_PREFIX, VersionNumber

router = APIRouter(prefix=API_PREFIX, tags=["versions"])


@router.get(
    "/models/{model}/versions/{version}/export",
    response_class=FileResponse,
    responses={200: {"content": {"application/zip": {}}}},
    summary="Export a version as a bundle to run without the service (model, schema, README, runner)",
)
async def export_version(
    model: str,
    version: VersionNumber,
    caller: CallerDep,
    container: ContainerDep,
    format: Annotated[str, Query(description="onnx, torchscript (PyTorch) or tflite (Keras)")] = "onnx",
) -> FileResponse:
    bundle = await run_in_threadpool(container.exports.export, caller, model, version, format)
    return FileResponse(
        bundle.path,
        media_type="application/zip",
        filename=bundle.filename,
        background=BackgroundTask(bundle.discard),
    )
