"""``POST /models/{model}/import``: an MLflow or Hugging Face-style model folder, zipped or tarred,
registered as the model's next version (ADR 0031)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response, status
from starlette.concurrency import run_in_threadpool

from aiservice.application.imports import SOURCES, ImportUpload, ModelImports
from aiservice.interfaces.http.deps import CallerDep, ContainerDep
from aiservice.interfaces.http.paths import API_PREFIX
from aiservice.interfaces.http.schemas import VersionOut
from aiservice.interfaces.http.uploads import (
    UploadForm,
    multipart_boundary,
    openapi_body,
    parse_version_metadata,
    read_upload,
)

router = APIRouter(prefix=API_PREFIX, tags=["versions"])

IMPORT_FORM = UploadForm("model folder", ("source", "metadata"))

_IMPORT_BODY = openapi_body(
    "A zip or tar.gz of an MLflow model folder (MLmodel) or a Hugging Face-style folder (config.json)",
    source={
        "type": "string",
        "enum": list(SOURCES),
        "description": "What the folder is; told by its files (MLmodel or config.json) when left out",
    },
    metadata={
        "type": "string",
        "description": 'JSON object: {"description", "metrics", "params", "sourceRun"}',
    },
)


@router.post(
    "/models/{model}/import",
    status_code=status.HTTP_201_CREATED,
    response_model=VersionOut,
    openapi_extra=_IMPORT_BODY,
    summary="Import an MLflow or Hugging Face-style folder as a new version (multipart: file, source)",
)
async def import_version(
    model: str, request: Request, caller: CallerDep, container: ContainerDep, response: Response
) -> VersionOut:
    imports: ModelImports = container.imports
    multipart_boundary(request, IMPORT_FORM)  # a wrong content type is refused before the model is looked up
    staged: ImportUpload = await run_in_threadpool(imports.start, caller, model)
    try:
        parts, _ = await read_upload(request, IMPORT_FORM, lambda _parts: staged.upload)
        metadata = parse_version_metadata(parts.fields.get("metadata"))
    except BaseException:
        await run_in_threadpool(staged.upload.abort)
        raise
    version = await run_in_threadpool(imports.finish, staged, parts.filename, parts.text("source"), metadata)
    response.headers["Location"] = f"/api/v1/ai/models/{version.model_id}/versions/{version.version}"
    return VersionOut.of(version)
