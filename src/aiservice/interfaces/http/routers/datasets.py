"""``/datasets``: training data uploaded per tenant, which a training request names as ``dataset://NAME``."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Request, Response, status
from pydantic import Field
from starlette.concurrency import run_in_threadpool

from aiservice.application.datasets import DatasetInfo, Datasets, DatasetUpload
from aiservice.domain.tenancy import Principal
from aiservice.interfaces.http.deps import CallerDep, ContainerDep, PageCursor, PageLimit
from aiservice.interfaces.http.paths import API_PREFIX
from aiservice.interfaces.http.schemas import ApiModel, PageOut
from aiservice.interfaces.http.uploads import FormParts, UploadForm, openapi_body, read_upload

router = APIRouter(prefix=API_PREFIX, tags=["datasets"])
DATASETS = f"{API_PREFIX}/datasets"
# name and format decide where the bytes go, so they come before the file (curl and httpx send them so
# when written first)
DATASET_FORM = UploadForm("dataset", ("name", "format"), leading=frozenset({"name", "format"}))

_UPLOAD_BODY = openapi_body(
    "The data: a csv (with a header row), parquet or npz (arrays X and y) file",
    name={
        "type": "string",
        "description": "1-128 letters, digits, '.', '_' or '-' (default: the file's name without its "
        "extension); sent before the file",
    },
    format={
        "type": "string",
        "enum": ["csv", "parquet", "npz"],
        "description": "Default: from the file's extension; sent before the file",
    },
)


class DatasetOut(ApiModel):
    name: str
    format: str
    size_bytes: int
    sha256: str
    created_at: datetime
    uri: str = Field(
        description="How a training request's datasetConfig names it", examples=["dataset://iris"]
    )
    links: dict[str, str]

    @classmethod
    def of(cls, dataset: DatasetInfo) -> DatasetOut:
        return cls(
            name=dataset.name,
            format=dataset.format,
            size_bytes=dataset.size_bytes,
            sha256=dataset.sha256,
            created_at=dataset.created_at,
            uri=f"dataset://{dataset.name}",
            links={"self": f"{DATASETS}/{dataset.name}"},
        )


@router.post(
    "/datasets",
    status_code=status.HTTP_201_CREATED,
    response_model=DatasetOut,
    openapi_extra=_UPLOAD_BODY,
    summary="Upload a training dataset (multipart: name, format, file)",
)
async def upload_dataset(
    request: Request, caller: CallerDep, c: ContainerDep, response: Response
) -> DatasetOut:
    dataset = await _receive(request, c.dataset_uploads, caller)
    response.headers["Location"] = f"{DATASETS}/{dataset.name}"
    return DatasetOut.of(dataset)


@router.get("/datasets", response_model=PageOut[DatasetOut])
def list_datasets(
    caller: CallerDep,
    c: ContainerDep,
    limit: PageLimit = 50,
    cursor: PageCursor = None,
) -> PageOut[DatasetOut]:
    page = c.dataset_uploads.list(caller, limit, cursor)
    return PageOut[DatasetOut](items=[DatasetOut.of(d) for d in page.items], next_cursor=page.next_cursor)


@router.get("/datasets/{name}", response_model=DatasetOut)
def get_dataset(name: str, caller: CallerDep, c: ContainerDep) -> DatasetOut:
    return DatasetOut.of(c.dataset_uploads.get(caller, name))


@router.delete("/datasets/{name}", status_code=status.HTTP_204_NO_CONTENT)
def delete_dataset(name: str, caller: CallerDep, c: ContainerDep) -> Response:
    c.dataset_uploads.delete(caller, name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


async def _receive(request: Request, datasets: Datasets, caller: Principal) -> DatasetInfo:
    """Stream one dataset upload into the store and keep it if it reads as its format; on any failure
    nothing is kept."""
    datasets.authorize_upload(caller)  # before a byte is read
    upload: DatasetUpload | None = None

    def start(parts: FormParts) -> DatasetUpload:
        nonlocal upload
        upload = datasets.start_upload(caller, parts.filename, parts.text("name"), parts.text("format"))
        return upload

    try:
        _, started = await read_upload(request, DATASET_FORM, start)
    except BaseException:
        if upload is not None:
            await run_in_threadpool(upload.abort)
        raise
    return await run_in_threadpool(datasets.finish_upload, started)
