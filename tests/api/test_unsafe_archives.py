"""Uploaded archives are checked member by member before anything unpacks: zip-slip, absolute paths,
symbolic links, zip bombs and too many members are a 422 naming the member, and nothing is stored."""

from __future__ import annotations

import io
import stat
import struct
import zipfile
import zlib
from functools import cache
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from aiservice.bootstrap import Container, bootstrap
from aiservice.domain.errors import UnsafeArchive
from aiservice.infrastructure.runtimes.archives import ArchiveLimits, check_zip, extract_zip
from aiservice.interfaces.http.app import create_app
from tests.conftest import Auth, make_settings
from tests.helpers import create_model, row_count, stored_files, upload

GIB = 1 << 30


def zip_of(*members: tuple[zipfile.ZipInfo | str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for member, data in members:
            archive.writestr(member, data)
    return buffer.getvalue()


def symlink(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@cache
def zeros_bomb(name: str = "model/data/zeros", size: int = GIB) -> bytes:
    """A valid zip whose one member inflates to ``size`` zero bytes from about 1 MB: the same fully
    flushed deflate block repeated, so building it costs a fraction of a second, not a compression."""
    chunk = 1 << 24
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(bytes(chunk)) + compressor.flush(zlib.Z_FULL_FLUSH)
    data = block * (size // chunk) + zlib.compressobj(9, zlib.DEFLATED, -15).flush()
    crc = 0
    for _ in range(size // chunk):
        crc = zlib.crc32(bytes(chunk), crc)
    encoded = name.encode()
    local = struct.pack("<4s5H3I2H", b"PK\x03\x04", 20, 0, 8, 0, 0x21, crc, len(data), size, len(encoded), 0)
    sizes = (crc, len(data), size, len(encoded))
    central = struct.pack("<4s6H3I5H2I", b"PK\x01\x02", 20, 20, 0, 8, 0, 0x21, *sizes, *(0,) * 6)
    directory = central + encoded
    offset = len(local) + len(encoded) + len(data)
    end = struct.pack("<4s4H2IH", b"PK\x05\x06", 0, 0, 1, 1, len(directory), offset, 0)
    return local + encoded + data + directory + end


WEIGHTS = ("model/data.pkl", b"weights")
HOSTILE: dict[str, tuple[bytes, str]] = {
    "zip-slip": (zip_of(WEIGHTS, ("model/../../evil.py", b"import os")), "model/../../evil.py"),
    "absolute-path": (zip_of(WEIGHTS, ("/etc/cron.d/evil", b"* * * * * root sh")), "/etc/cron.d/evil"),
    "windows-path": (zip_of(WEIGHTS, ("C:\\evil.bat", b"del")), "C:\\evil.bat"),
    "symlink": (zip_of(WEIGHTS, (symlink("model/data/link"), b"/etc/passwd")), "model/data/link"),
    "zip-bomb": (b"", "model/data/zeros"),  # built on first use
    "too-many-members": (zip_of(*((f"model/m{i}", b"") for i in range(10_001))), ""),
}


@pytest.mark.parametrize("case", HOSTILE)
def test_unsafe_archive_upload_is_422_naming_the_member_and_stores_nothing(
    client: TestClient, auth: Auth, container: Container, engine: Engine, case: str
) -> None:
    content, member = HOSTILE[case]
    content = zeros_bomb() if case == "zip-bomb" else content
    create_model(client, auth(), "net", framework="pytorch")
    response = upload(client, auth(), "net", content=content, filename="model.pt")
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["type"] == "https://aiservice.dev/problems/unsafe-archive"
    if member:
        assert problem["member"] == member
        assert repr(member) in problem["detail"]
    else:
        assert "10001 members" in problem["detail"]
    assert row_count(engine, "model_versions") == 0
    assert stored_files(container.settings.artifact_path) == []


def test_a_zipped_saved_model_escaping_its_folder_is_refused_as_for_torch(
    client: TestClient, auth: Auth, engine: Engine
) -> None:
    create_model(client, auth(), "tf", framework="tensorflow")
    content = zip_of(("saved_model/saved_model.pb", b""), ("saved_model/../../x", b""))
    response = upload(client, auth(), "tf", content=content, filename="model.zip")
    assert response.status_code == 422, response.text
    assert response.json()["member"] == "saved_model/../../x"
    assert row_count(engine, "model_versions") == 0


def test_an_ordinary_archive_artifact_still_uploads(client: TestClient, auth: Auth) -> None:
    create_model(client, auth(), "churn")
    assert upload(client, auth(), "churn").status_code == 201  # skops files are zips too


def test_bomb_is_refused_from_the_directory_alone(tmp_path: Path) -> None:
    path = tmp_path / "bomb.zip"
    path.write_bytes(zeros_bomb())
    with pytest.raises(UnsafeArchive, match="inflates 1028 times"):
        check_zip(path, ArchiveLimits())
    with pytest.raises(UnsafeArchive, match="declared"):
        extract_zip(path, tmp_path / "out", ArchiveLimits(GIB, GIB - 1, max_compression_ratio=10_000))
    assert not (tmp_path / "out").exists()


def test_a_directory_that_understates_a_size_stops_the_unpacking(tmp_path: Path) -> None:
    """The central directory and local header both claim 1000 bytes for a member of 1 MiB."""
    data = bytearray(zip_of(("big", bytes(1 << 20))))
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        at = data.index(signature) + offset
        data[at : at + 4] = struct.pack("<I", 1000)
    path = tmp_path / "liar.zip"
    path.write_bytes(bytes(data))
    assert [m.file_size for m in check_zip(path, ArchiveLimits())] == [1000]
    (tmp_path / "out").mkdir()
    with pytest.raises(UnsafeArchive) as refused:
        extract_zip(path, tmp_path / "out", ArchiveLimits())
    assert refused.value.extra["member"] == "big"
    assert sum(p.stat().st_size for p in (tmp_path / "out").iterdir()) <= 1000


def test_a_safe_archive_unpacks_inside_its_folder(tmp_path: Path) -> None:
    path = tmp_path / "ok.zip"
    path.write_bytes(zip_of(("a/b.txt", b"hello"), ("c.txt", b"world")))
    (tmp_path / "out").mkdir()
    extract_zip(path, tmp_path / "out", ArchiveLimits(max_members=2, max_unpacked_bytes=10))
    assert (tmp_path / "out" / "a" / "b.txt").read_bytes() == b"hello"
    with pytest.raises(UnsafeArchive, match="members"):
        check_zip(path, ArchiveLimits(max_members=1))


@pytest.mark.filterwarnings("ignore:`torch.jit.(trace|trace_method|save)` is deprecated:DeprecationWarning")
def test_the_operators_archive_limits_hold_when_the_model_is_loaded_not_only_when_uploaded(
    engine: Engine, database_url: str, tmp_path: Path
) -> None:
    """A TorchScript file of 10,050 members: over the default limit (10,000), under the configured one.
    The upload's inspection and the serving load must both use the configured limit."""
    import torch

    class Wide(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.linear = torch.nn.Linear(4, 3)
            for i in range(10_050):  # each buffer is a member of its own in the saved zip
                self.register_buffer(f"b{i}", torch.zeros(1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.softmax(self.linear(x), dim=1)

    path = tmp_path / "wide.pt"
    torch.jit.save(torch.jit.trace(Wide().eval(), torch.zeros(1, 4)), path)
    with zipfile.ZipFile(path) as archive:
        assert len(archive.infolist()) > ArchiveLimits().max_members

    container = bootstrap(make_settings(database_url, tmp_path / "data", max_archive_members=20_000))
    container.tenants.ensure("acme")
    token = container.tokens.issue("tester", "acme", ["editor"], 600)
    headers = {"Authorization": f"Bearer {token}", "X-Tenant-ID": "acme"}
    with TestClient(create_app(container)) as client:
        configuration = {"inputShape": [4], "task": "classification"}
        create_model(client, headers, "wide", framework="pytorch", configuration=configuration)
        uploaded = upload(client, headers, "wide", content=path.read_bytes(), filename="model.pt")
        assert uploaded.status_code == 201, uploaded.text
        predicted = client.post(
            "/api/v1/ai/models/wide/predict",
            json={"input": {"features": [0.1, 0.2, 0.3, 0.4]}},
            headers=headers,
        )
        assert predicted.status_code == 200, predicted.text
