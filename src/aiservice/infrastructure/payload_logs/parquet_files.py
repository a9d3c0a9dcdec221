"""The Parquet sink's files: one file per (tenant, model) per flush of the recorder, in the artifact
store (so encryption at rest applies as to any artifact), holding the inputs and outputs that the
``prediction_logs`` rows of that flush leave out.

A file has one row per logged prediction, in the order of its ``file_row``: ``id`` and ``request_id``
(which row of ``prediction_logs`` it belongs to), ``logged_at``, and ``inputs`` and ``outputs`` as JSON
text (a logged field is any JSON, which a columnar schema cannot hold as it is). Keys are
``payload-logs/{tenant}/{model}/{yyyy-mm-dd}/{32 hex}.parquet``: not the shape of a model artifact's
key, so the sweeper of orphaned artifacts never takes them; they go with their rows (retention, erasure).
"""

from __future__ import annotations

import io
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.parquet as pq  # type: ignore[import-untyped]

from aiservice.application.ports import ArtifactStore, StoredArtifact
from aiservice.domain.payload_logging import LoggedPrediction

log = logging.getLogger(__name__)

PREFIX = "payload-logs/"
MAX_FILE_BYTES = 1024**3

SCHEMA = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("logged_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("inputs", pa.string()),
        pa.field("outputs", pa.string()),
    ]
)


@dataclass(frozen=True)
class Payload:
    """One row of a file: what a thin ``prediction_logs`` row leaves out."""

    id: str
    inputs: Any
    outputs: Any


def file_key(tenant_id: str, model_id: str, records: Sequence[LoggedPrediction]) -> str:
    day = records[0].created_at.strftime("%Y-%m-%d")
    return f"{PREFIX}{tenant_id}/{model_id}/{day}/{uuid.uuid4().hex}.parquet"


def encode(records: Sequence[LoggedPrediction]) -> bytes:
    """The Parquet bytes of ``records`` (row ``i`` is ``records[i]``)."""
    table = pa.Table.from_pydict(
        {
            "id": [r.id for r in records],
            "request_id": [r.request_id for r in records],
            "logged_at": [r.created_at for r in records],
            "inputs": [orjson.dumps(r.inputs).decode() for r in records],
            "outputs": [orjson.dumps(r.outputs).decode() for r in records],
        },
        schema=SCHEMA,
    )
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue()


def decode(data: bytes) -> list[Payload]:
    """The rows of a file, in order."""
    table = pq.read_table(io.BytesIO(data), columns=["id", "inputs", "outputs"])
    columns = table.to_pydict()
    return [
        Payload(i, _json(inputs), _json(outputs))
        for i, inputs, outputs in zip(columns["id"], columns["inputs"], columns["outputs"], strict=True)
    ]


def _json(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


class ParquetPayloadFiles:
    """Writes, reads and deletes the files in the artifact store."""

    def __init__(self, store: ArtifactStore) -> None:
        self._store = store

    def write(self, tenant_id: str, model_id: str, records: Sequence[LoggedPrediction]) -> StoredArtifact:
        data = encode(records)
        writer = self._store.writer(file_key(tenant_id, model_id, records), MAX_FILE_BYTES)
        try:
            writer.write(data)
        except BaseException:
            writer.abort()
            raise
        return writer.commit()

    def read(self, key: str, digest: str) -> list[Payload] | None:
        """The rows of a file; None when it is missing or does not match its digest (logged)."""
        try:
            with self._store.open(key, digest) as handle:
                return decode(handle.read())
        except Exception:
            log.warning("payload log: the file %s could not be read", key, exc_info=True)
            return None

    def delete(self, key: str) -> bool:
        """Whether the object is gone; a failure is logged (the caller tries again later)."""
        try:
            self._store.delete(key)
        except Exception:
            log.warning("payload log: the file %s was not deleted", key, exc_info=True)
            return False
        return True
