"""Artifact downloads with ``ETag`` (the SHA-256), ``If-None-Match`` and single byte ``Range``s."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import BinaryIO
from urllib.parse import quote

from fastapi import Request
from starlette.responses import Response, StreamingResponse

from aiservice.domain.errors import DomainError
from aiservice.domain.media_types import MODEL_MEDIA_TYPES, OCTET_STREAM
from aiservice.domain.models import ModelVersion

CHUNK = 1 << 20
# A download's OpenAPI content: every media type an artifact can be stored under.
ARTIFACT_CONTENT: dict[str, dict[str, object]] = {
    media_type: {} for media_type in sorted({*MODEL_MEDIA_TYPES.values(), OCTET_STREAM})
}
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class RangeNotSatisfiable(DomainError):
    code = "range-not-satisfiable"
    title = "Range not satisfiable"


def _read(handle: BinaryIO, start: int, length: int) -> Iterator[bytes]:
    try:
        handle.seek(start)
        remaining = length
        while remaining > 0:
            chunk = handle.read(min(CHUNK, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
            yield chunk
    finally:
        handle.close()


def _byte_range(header: str, size: int) -> tuple[int, int] | None:
    """(start, end inclusive) of a single satisfiable range; None to send the whole body."""
    match = _RANGE.match(header.strip())
    if match is None:
        return None  # multiple or odd ranges: RFC 9110 lets us answer with the full representation
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # suffix range: the last N bytes
        length = int(last)
        if length == 0:
            raise RangeNotSatisfiable("A suffix range of zero bytes selects nothing.", extra={"size": size})
        return max(size - length, 0), size - 1
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if start >= size or end < start:
        raise RangeNotSatisfiable(
            f"The range {header!r} is outside the artifact's {size} bytes.", extra={"size": size}
        )
    return start, end


def artifact_response(request: Request, version: ModelVersion, handle: BinaryIO) -> Response:
    artifact = version.artifact
    etag = f'"{artifact.digest}"'
    headers = {
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "Content-Disposition": f"attachment; filename*=UTF-8''{quote(artifact.filename)}",
        "X-Checksum-SHA256": artifact.digest,
    }
    if etag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
        handle.close()
        return Response(status_code=304, headers=headers)
    size = artifact.size_bytes
    wanted = request.headers.get("range")
    if_range = request.headers.get("if-range")
    selected = _byte_range(wanted, size) if wanted and (if_range is None or if_range == etag) else None
    if selected is None:
        headers["Content-Length"] = str(size)
        return StreamingResponse(_read(handle, 0, size), media_type=artifact.media_type, headers=headers)
    start, end = selected
    headers["Content-Range"] = f"bytes {start}-{end}/{size}"
    headers["Content-Length"] = str(end - start + 1)
    return StreamingResponse(
        _read(handle, start, end - start + 1),
        status_code=206,
        media_type=artifact.media_type,
        headers=headers,
    )
