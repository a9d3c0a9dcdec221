"""The media type an artifact is stored and served under, decided from its filename by our own map.

Python's ``mimetypes`` (and the HTTP clients that use it to label a multipart part) reads the host's
``/etc/mime.types``, which knows nothing of model formats: it calls a ``.pt`` file a SNES page table
and most others nothing at all. The type a client declares is that same guess, so it is not asked:
the same filename is always stored under the same type, and a client cannot make a download come
back as ``text/html``. Registered types are used where they exist; the rest are the names in common
use for each format. Anything else is ``application/octet-stream``.
"""

from __future__ import annotations

from pathlib import PurePosixPath

OCTET_STREAM = "application/octet-stream"

MODEL_MEDIA_TYPES: dict[str, str] = {
    ".skops": "application/x-skops",
    ".pkl": "application/x-python-pickle",
    ".pickle": "application/x-python-pickle",
    ".joblib": "application/x-joblib",
    ".json": "application/json",  # XGBoost's JSON model format
    ".ubj": "application/ubjson",  # XGBoost's binary (Universal Binary JSON) model format
    ".onnx": "application/onnx",
    ".pt": "application/x-pytorch",
    ".pth": "application/x-pytorch",
    ".pt2": "application/x-pytorch",  # a torch.export program archive
    ".keras": "application/x-keras",
    ".h5": "application/x-hdf5",
    ".hdf5": "application/x-hdf5",
    ".safetensors": "application/x-safetensors",
    ".zip": "application/zip",
    ".tar": "application/x-tar",
    ".tgz": "application/gzip",
    ".gz": "application/gzip",
}


def artifact_media_type(filename: str) -> str:
    """The media type for an artifact named ``filename``, by its last suffix (case-insensitive)."""
    suffix = PurePosixPath(filename).suffix.lower()
    return MODEL_MEDIA_TYPES.get(suffix, OCTET_STREAM)
