"""Streaming multipart uploads: the ``file`` part goes to a store's writer as it arrives.

Starlette's form parser spools files to a temporary file and does not notice a body cut short;
this one writes straight into the store's writer (hashing on the way), bounds every other field,
and refuses a body that ends before its closing boundary. Nothing is recorded unless all of it
arrived. Version uploads and dataset uploads both read their bodies here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import orjson
from fastapi import Request
from pydantic import ValidationError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect

from aiservice.application.version_upload import VersionUpload
from aiservice.application.versions import ModelVersions, VersionMetadata
from aiservice.domain.errors import DomainError, FieldError, InvalidInput
from aiservice.domain.models import ModelVersion
from aiservice.domain.tenancy import Principal
from aiservice.interfaces.http.openapi import PROBLEM_REF
from aiservice.interfaces.http.problems import PROBLEM_JSON
from aiservice.interfaces.http.schemas import VersionMetadataIn
from aiservice.interfaces.http.strict_json import nul_field

FLUSH_BYTES = 1 << 20
MAX_FIELD_BYTES = 64 * 1024


@dataclass(frozen=True)
class UploadForm:
    """What one upload endpoint accepts: a ``file`` part and some small text fields."""

    subject: str  # what is uploaded, for messages: "version", "dataset"
    fields: tuple[str, ...]
    leading: frozenset[str] = frozenset()  # fields that decide where the file goes: sent before it


VERSION_FORM = UploadForm("version", ("metadata",))


class UploadSink(Protocol):
    def write_all(self, chunks: list[memoryview]) -> None: ...


Sink = TypeVar("Sink", bound=UploadSink)


def openapi_body(file: str, **fields: dict[str, Any]) -> dict[str, Any]:
    """An upload route's ``openapi_extra``: a multipart body of a required binary ``file`` (described
    by ``file``) and the given text fields' schemas."""
    properties = {**fields, "file": {"type": "string", "format": "binary", "description": file}}
    schema = {"type": "object", "required": ["file"], "properties": properties}
    too_slow = {  # past UPLOAD_TIMEOUT_SECONDS
        "description": "The upload took too long (upload-timeout); nothing was kept",
        "content": {PROBLEM_JSON: {"schema": {"$ref": PROBLEM_REF}}},
    }
    return {
        "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": schema}}},
        "responses": {"408": too_slow},
    }


class MalformedUpload(DomainError):
    code = "malformed-upload"
    title = "Malformed upload"


class TruncatedUpload(DomainError):
    code = "truncated-upload"
    title = "Truncated upload"


class UnsupportedMediaType(DomainError):
    code = "unsupported-media-type"
    title = "Unsupported media type"


class FormParts:
    """Collects parts from the parser's callbacks; file bytes wait in ``pending`` for a flush."""

    def __init__(self, form: UploadForm) -> None:
        self.form = form
        self.header_name = b""
        self.header_value = b""
        self.headers: dict[bytes, bytes] = {}
        self.name: str | None = None
        self.is_file = False
        self.files = 0
        self.filename = ""
        self.pending: list[memoryview] = []
        self.pending_bytes = 0
        self.fields: dict[str, bytearray] = {}
        self.unknown: list[str] = []

    def on_part_begin(self) -> None:
        self.headers, self.name, self.is_file = {}, None, False

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def on_header_end(self) -> None:
        self.headers[self.header_name.lower()] = self.header_value
        self.header_name, self.header_value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self.headers.get(b"content-disposition", b""))
        raw_name = options.get(b"name")
        if raw_name is None:
            raise MalformedUpload("Every part needs a Content-Disposition header with a name.")
        self.name = raw_name.decode("utf-8", "replace")
        if self.name == "file":
            self.files += 1
            if self.files > 1:
                raise InvalidInput(
                    "Send exactly one 'file' part.", errors=[FieldError("form.file", "repeated")]
                )
            self.is_file = True
            # The part's Content-Type is not read: the server names the media type from the filename.
            self.filename = options.get(b"filename", b"artifact").decode("utf-8", "replace")
        elif self.name in self.form.fields:
            if self.files and self.name in self.form.leading:
                raise InvalidInput(
                    f"Send the '{self.name}' field before the 'file' part.",
                    errors=[FieldError(f"form.{self.name}", "must come before the 'file' part")],
                )
            self.fields[self.name] = bytearray()
        else:
            self.unknown.append(self.name)

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.is_file:
            self.pending.append(memoryview(data)[start:end])  # no copy: the chunk is ours
            self.pending_bytes += end - start
        elif self.name in self.fields:
            value = self.fields[self.name]
            value += data[start:end]
            if len(value) > MAX_FIELD_BYTES:
                raise InvalidInput(
                    f"The '{self.name}' field is larger than {MAX_FIELD_BYTES} bytes.",
                    errors=[FieldError(f"form.{self.name}", "too large")],
                )

    def take_pending(self) -> list[memoryview]:
        taken = self.pending
        self.pending, self.pending_bytes = [], 0
        return taken

    def text(self, field: str) -> str | None:
        """A text field as sent (``None`` when absent or empty)."""
        value = self.fields.get(field)
        return value.decode("utf-8", "replace") if value else None


def _quoted(names: tuple[str, ...]) -> str:
    quoted = [f"'{name}'" for name in names]
    return " and ".join(quoted) if len(quoted) < 3 else f"{', '.join(quoted[:-1])} and {quoted[-1]}"


def multipart_boundary(request: Request, form: UploadForm) -> bytes:
    content_type, params = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or not params.get(b"boundary"):
        raise UnsupportedMediaType(
            f"Upload a {form.subject} as multipart/form-data with a 'file' part "
            f"(and optionally {_quoted(form.fields)}).",
            errors=[FieldError("header.Content-Type", "must be multipart/form-data with a boundary")],
        )
    return params[b"boundary"]


def parse_version_metadata(raw: bytearray | None) -> VersionMetadata:
    if not raw:
        return VersionMetadata()
    try:
        document = orjson.loads(raw)
        nul = nul_field(document, "form.metadata")
        if nul is not None:
            raise InvalidInput(
                f"{nul} holds a NUL character.", errors=[FieldError(nul, "must not contain NUL")]
            )
        parsed = VersionMetadataIn.model_validate(document)
    except orjson.JSONDecodeError as exc:
        raise InvalidInput(
            "The 'metadata' field must be a JSON object.", errors=[FieldError("form.metadata", "not JSON")]
        ) from exc
    except ValidationError as exc:
        errors = [
            FieldError(".".join(["form.metadata", *map(str, e["loc"])]), e["msg"]) for e in exc.errors()
        ]
        raise InvalidInput("The 'metadata' field has invalid entries.", errors=errors) from exc
    return VersionMetadata(
        description=parsed.description,
        metrics=parsed.metrics,
        params=parsed.params,
        source_run=parsed.source_run,
    )


async def read_upload(
    request: Request, form: UploadForm, sink_for: Callable[[FormParts], Sink]
) -> tuple[FormParts, Sink]:
    """Read a whole multipart body: the fields into memory (bounded), the file part's bytes into the
    sink that ``sink_for`` returns, called in a worker thread once the file part has begun (with the
    fields sent before it). The caller aborts its sink if this raises."""
    boundary = multipart_boundary(request, form)
    parts = FormParts(form)
    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": parts.on_part_begin,
            "on_header_field": parts.on_header_field,
            "on_header_value": parts.on_header_value,
            "on_header_end": parts.on_header_end,
            "on_headers_finished": parts.on_headers_finished,
            "on_part_data": parts.on_part_data,
        },
    )
    sink: Sink | None = None
    try:
        async for chunk in request.stream():
            _feed(parser, chunk)
            if sink is None and parts.files:
                sink = await run_in_threadpool(sink_for, parts)
            if sink is not None and parts.pending_bytes >= FLUSH_BYTES:
                await run_in_threadpool(sink.write_all, parts.take_pending())
    except ClientDisconnect as exc:
        raise TruncatedUpload("The client went away before the upload finished; nothing was kept.") from exc
    if parser.state != MultipartState.END:
        raise TruncatedUpload(
            "The upload ended before its closing multipart boundary; nothing was kept.",
            errors=[FieldError("form.file", "truncated")],
        )
    if sink is not None and parts.pending_bytes:
        await run_in_threadpool(sink.write_all, parts.take_pending())
    if parts.unknown:
        raise InvalidInput(
            f"Unknown form fields: {', '.join(parts.unknown)}; send only {_quoted(('file', *form.fields))}.",
            errors=[FieldError(f"form.{n}", "unknown field") for n in parts.unknown],
        )
    if sink is None:  # no file part: it would have opened one
        raise InvalidInput(
            f"Send the {form.subject} in a 'file' part.", errors=[FieldError("form.file", "required")]
        )
    return parts, sink


def _feed(parser: MultipartParser, chunk: bytes) -> None:
    try:
        parser.write(chunk)
    except ValueError as exc:  # the multipart parser's own complaints
        raise MalformedUpload(f"The multipart body is malformed: {exc}") from exc


async def receive_version(
    request: Request, versions: ModelVersions, caller: Principal, model: str
) -> ModelVersion:
    """Stream one version upload into the store and record it; on any failure nothing is kept."""
    multipart_boundary(request, VERSION_FORM)  # a wrong content type is refused before the model is looked up
    upload: VersionUpload = await run_in_threadpool(versions.start_upload, caller, model)
    try:
        parts, _ = await read_upload(request, VERSION_FORM, lambda _parts: upload)
        metadata = parse_version_metadata(parts.fields.get("metadata"))
    except BaseException:
        await run_in_threadpool(upload.abort)
        raise
    return await run_in_threadpool(versions.finish_upload, upload, parts.filename, metadata)
