"""Untrusted zip archives (torch ``.pt``, ``.keras``, skops, zipped SavedModels), checked member by member.

``check_zip`` reads only the central directory: no absolute or Windows paths, no ``..``, no symbolic
links, at most ``max_members`` members and ``max_unpacked_bytes`` declared in all, and no large member
inflating more than ``max_compression_ratio`` times, so a zip bomb is refused before a byte is inflated.
``extract_zip`` checks, then counts the bytes that really come out, because a directory can lie about
sizes. No upload path accepts tar archives.
"""

from __future__ import annotations

import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from aiservice.domain.errors import InvalidArtifact, UnsafeArchive

_CHUNK = 1 << 20


@dataclass(frozen=True)
class ArchiveLimits:
    max_members: int = 10_000
    max_unpacked_bytes: int = 8 * 1024**3
    # A member larger than _RATIO_FLOOR may inflate at most this many times its compressed size (Apache
    # POI's zip-bomb rule): a model's weights hardly compress, a bomb's zeros shrink a thousandfold.
    max_compression_ratio: int = 100

    def to_json(self) -> dict[str, int]:
        """As a child process receives them over its pipe."""
        return {
            "maxMembers": self.max_members,
            "maxUnpackedBytes": self.max_unpacked_bytes,
            "maxCompressionRatio": self.max_compression_ratio,
        }

    @classmethod
    def from_json(cls, data: dict[str, int] | None) -> ArchiveLimits:
        if not data:
            return cls()
        return cls(data["maxMembers"], data["maxUnpackedBytes"], data["maxCompressionRatio"])


_RATIO_FLOOR = 1 << 20


def _unsafe(detail: str, member: str | None = None) -> UnsafeArchive:
    return UnsafeArchive(detail, extra={"member": member} if member is not None else None)


def check_zip(path: Path, limits: ArchiveLimits | None = None) -> list[zipfile.ZipInfo]:
    """The members of the zip at ``path`` once they pass every check; ``limits=None`` checks names and
    links only (for a load after an upload that was checked against the configured limits)."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise InvalidArtifact(f"The archive cannot be read as a zip: {exc}") from exc
    if limits is not None and len(members) > limits.max_members:
        raise _unsafe(f"The zip has {len(members)} members; at most {limits.max_members} are accepted.")
    declared = 0
    for member in members:
        check_member(member)
        declared += member.file_size
        if limits is not None:
            _check_ratio(member, limits.max_compression_ratio)
        if limits is not None and declared > limits.max_unpacked_bytes:
            raise _unsafe(
                f"The zip unpacks to more than {limits.max_unpacked_bytes} bytes "
                f"(declared, at member {member.filename!r}).",
                member.filename,
            )
    return members


def check_if_zip(path: Path, limits: ArchiveLimits) -> None:
    """``check_zip`` for a file that reads as a zip; anything else is left to its runtime to judge."""
    try:
        with zipfile.ZipFile(path):
            pass
    except (zipfile.BadZipFile, OSError, ValueError):
        return
    check_zip(path, limits)


def _check_ratio(member: zipfile.ZipInfo, ratio: int) -> None:
    if member.file_size > _RATIO_FLOOR and member.file_size > ratio * max(member.compress_size, 1):
        raise _unsafe(
            f"The zip member {member.filename!r} inflates {member.file_size // max(member.compress_size, 1)} "
            f"times (to {member.file_size} bytes); at most {ratio} times is accepted: a zip bomb?",
            member.filename,
        )


def check_member(member: zipfile.ZipInfo) -> None:
    name = member.filename
    path = PurePosixPath(name)
    if path.is_absolute() or PureWindowsPath(name).drive or name.startswith("\\") or "\\" in name:
        raise _unsafe(f"The zip member {name!r} has an absolute or Windows path.", name)
    if ".." in path.parts:
        raise _unsafe(f"The zip member {name!r} points outside the archive.", name)
    if stat.S_ISLNK(member.external_attr >> 16):
        raise _unsafe(f"The zip member {name!r} is a symbolic link.", name)
    if "\x00" in name:
        raise _unsafe(f"The zip member {name!r} has a NUL in its name.", name)


def extract_zip(path: Path, folder: Path, limits: ArchiveLimits | None = None) -> None:
    """Unpack into ``folder`` (which must exist); each member may yield no more than it declares, and
    all of them together no more than the limit."""
    members = check_zip(path, limits)
    budget = sum(m.file_size for m in members)
    if limits is not None:
        budget = min(budget, limits.max_unpacked_bytes)
    written = 0
    with zipfile.ZipFile(path) as archive:
        for member in members:
            destination = folder.joinpath(*PurePosixPath(member.filename).parts)
            if member.is_dir():
                destination.mkdir(parents=True, exist_ok=True)
                continue
            destination.parent.mkdir(parents=True, exist_ok=True)
            try:
                written = _copy_member(archive, member, destination, written, budget)
            except (zipfile.BadZipFile, OSError, EOFError) as exc:  # a CRC error: the sizes lied
                raise _unsafe(
                    f"The zip member {member.filename!r} cannot be unpacked: {exc}", member.filename
                ) from exc


def _copy_member(
    archive: zipfile.ZipFile, member: zipfile.ZipInfo, destination: Path, written: int, budget: int
) -> int:
    own = 0
    with archive.open(member) as source, destination.open("wb") as target:
        while chunk := source.read(_CHUNK):
            own += len(chunk)
            written += len(chunk)
            if own > member.file_size or written > budget:
                raise _unsafe(
                    f"The zip member {member.filename!r} unpacks to more than the archive declares.",
                    member.filename,
                )
            target.write(chunk)
    return written
