"""Unpacking an imported archive (zip or tar.gz) with the upload checks, and finding its model folder.

A zip goes through ``runtimes.archives.extract_zip`` (paths, links, member count, declared and real
sizes, compression ratio). A tar is read member by member under the same limits: only regular files
and folders, no absolute paths, no ``..``, no links or devices, and the bytes really written counted.
The folder is the archive's root, or its only top-level folder when everything sits in one.
"""

from __future__ import annotations

import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath, PureWindowsPath

from aiservice.application.imports import ImportedModel
from aiservice.domain.errors import FieldError, InvalidArtifact, UnsafeArchive
from aiservice.infrastructure.imports import huggingface, mlflow
from aiservice.infrastructure.runtimes.archives import ArchiveLimits, extract_zip

_CHUNK = 1 << 20
_ZIP_MAGIC = b"PK\x03\x04"


class FolderReader:
    """The ``ModelFolderReader`` port: scratch folders under ``scratch`` (the system's by default)."""

    def __init__(self, limits: ArchiveLimits, scratch: Path | None = None) -> None:
        self._limits = limits
        self._scratch = scratch

    @contextmanager
    def read(
        self, archive: Path, archive_name: str, source: str | None, framework: str
    ) -> Iterator[ImportedModel]:
        if self._scratch is not None:
            self._scratch.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix="import-", dir=self._scratch))
        try:
            unpacked = workdir / "unpacked"
            unpacked.mkdir()
            unpack(archive, unpacked, self._limits)
            folder = model_folder(unpacked)
            source = source or detect_source(folder)
            out = workdir / "artifact"
            out.mkdir()
            if source == "mlflow":
                yield mlflow.read(folder, out, framework)
            else:
                yield huggingface.read(folder, out)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)


def unpack(archive: Path, folder: Path, limits: ArchiveLimits) -> None:
    with archive.open("rb") as handle:
        head = handle.read(4)
    if head == _ZIP_MAGIC:
        extract_zip(archive, folder, limits)
        return
    try:
        is_tar = tarfile.is_tarfile(archive)
    except OSError:
        is_tar = False
    if not is_tar:
        raise InvalidArtifact(
            "The import is neither a zip nor a tar.gz archive of a model folder.",
            errors=[FieldError("form.file", "not a zip or tar.gz archive")],
        )
    extract_tar(archive, folder, limits)


def extract_tar(archive: Path, folder: Path, limits: ArchiveLimits) -> None:
    try:
        with tarfile.open(archive, "r:*") as tar:
            count = 0
            written = 0
            for member in tar:
                count += 1
                if count > limits.max_members:
                    raise UnsafeArchive(
                        f"The archive has more than {limits.max_members} members.",
                        extra={"member": member.name},
                    )
                _check_tar_member(member)
                destination = folder.joinpath(*PurePosixPath(member.name).parts)
                if member.isdir():
                    destination.mkdir(parents=True, exist_ok=True)
                    continue
                destination.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                if source is None:
                    raise UnsafeArchive(
                        f"The member {member.name!r} cannot be read.", extra={"member": member.name}
                    )
                with source, destination.open("wb") as target:
                    while chunk := source.read(_CHUNK):
                        written += len(chunk)
                        if written > limits.max_unpacked_bytes:
                            raise UnsafeArchive(
                                f"The archive unpacks to more than {limits.max_unpacked_bytes} bytes.",
                                extra={"member": member.name},
                            )
                        target.write(chunk)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise InvalidArtifact(f"The tar archive cannot be read: {exc}") from exc


def _check_tar_member(member: tarfile.TarInfo) -> None:
    name = member.name
    path = PurePosixPath(name)
    if path.is_absolute() or PureWindowsPath(name).drive or "\\" in name or "\x00" in name:
        raise UnsafeArchive(
            f"The archive member {name!r} has an absolute or Windows path.", extra={"member": name}
        )
    if ".." in path.parts:
        raise UnsafeArchive(
            f"The archive member {name!r} points outside the archive.", extra={"member": name}
        )
    if not (member.isfile() or member.isdir()):
        raise UnsafeArchive(
            f"The archive member {name!r} is a link or a special file; only files and folders are accepted.",
            extra={"member": name},
        )


_MARKERS = ("MLmodel", "config.json")


def model_folder(root: Path) -> Path:
    """The folder holding ``MLmodel`` or ``config.json``: the root, or its only top-level folder."""
    folder = root
    for _ in range(2):
        if any((folder / marker).is_file() for marker in _MARKERS):
            return folder
        entries = [p for p in folder.iterdir() if not p.name.startswith((".", "__MACOSX"))]
        if len(entries) != 1 or not entries[0].is_dir():
            break
        folder = entries[0]
    raise InvalidArtifact(
        "The archive holds no model folder: an MLflow model needs an 'MLmodel' file, a Hugging Face-style "
        "folder a 'config.json', at its root or in its only top-level folder.",
        errors=[FieldError("form.file", "no MLmodel or config.json")],
    )


def detect_source(folder: Path) -> str:
    return "mlflow" if (folder / "MLmodel").is_file() else "huggingface"
