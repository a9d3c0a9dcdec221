"""The locator confines local paths to the operator's roots and uploads to their tenant."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from aiservice.domain.errors import InvalidInput
from aiservice.infrastructure.datasets import DatasetError, DatasetLocator, DatasetStore

FIELD = "body.dataset.uri"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = tmp_path / "datasets"
    root.mkdir()
    (root / "train.csv").write_text("a,label\n1,x\n")
    return root


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    secret = tmp_path / "secret.csv"
    secret.write_text("password\nhunter2\n")
    return secret


@pytest.fixture
def store(tmp_path: Path) -> DatasetStore:
    return DatasetStore(tmp_path / "uploaded")


@pytest.fixture
def locator(root: Path, store: DatasetStore) -> DatasetLocator:
    return DatasetLocator([root], store)


def refusal(locator: DatasetLocator, reference: str, tenant: str = "acme") -> str:
    with pytest.raises(InvalidInput) as caught:
        locator.resolve(tenant, reference, FIELD)
    assert [error.field for error in caught.value.errors] == [FIELD]
    return caught.value.errors[0].message


def test_a_file_inside_a_root_resolves_to_its_absolute_path(locator: DatasetLocator, root: Path) -> None:
    assert locator.resolve("acme", str(root / "train.csv"), FIELD) == str((root / "train.csv").resolve())


def test_a_file_uri_inside_a_root_resolves_to_a_plain_path(locator: DatasetLocator, root: Path) -> None:
    uri = (root / "train.csv").resolve().as_uri()
    assert locator.resolve("acme", uri, FIELD) == str((root / "train.csv").resolve())


def test_a_folder_inside_a_root_resolves(locator: DatasetLocator, root: Path) -> None:
    (root / "images" / "cat").mkdir(parents=True)
    assert locator.resolve("acme", str(root / "images"), FIELD) == str((root / "images").resolve())


def test_dot_dot_that_stays_inside_is_normalised(locator: DatasetLocator, root: Path) -> None:
    (root / "sub").mkdir()
    reference = f"{root}/sub/../train.csv"
    assert locator.resolve("acme", reference, FIELD) == str((root / "train.csv").resolve())


def test_dot_dot_escaping_the_root_is_refused(locator: DatasetLocator, root: Path, outside: Path) -> None:
    refusal(locator, f"{root}/../{outside.name}")


def test_a_symlink_inside_the_root_pointing_outside_is_refused(
    locator: DatasetLocator, root: Path, outside: Path
) -> None:
    (root / "link.csv").symlink_to(outside)
    refusal(locator, str(root / "link.csv"))


def test_a_symlinked_folder_pointing_outside_is_refused(
    locator: DatasetLocator, root: Path, outside: Path
) -> None:
    (root / "elsewhere").symlink_to(outside.parent, target_is_directory=True)
    refusal(locator, str(root / "elsewhere" / outside.name))


def test_a_path_outside_every_root_is_refused(locator: DatasetLocator, outside: Path) -> None:
    refusal(locator, str(outside))


def test_outside_paths_get_one_message_whether_or_not_they_exist(
    locator: DatasetLocator, outside: Path
) -> None:
    """A tenant must not learn which server paths exist by probing."""
    existing = refusal(locator, str(outside))
    missing = refusal(locator, str(outside.parent / "no-such-file.csv"))
    assert existing == missing
    assert str(outside.parent) not in existing


def test_a_missing_file_inside_a_root_is_refused_as_missing(locator: DatasetLocator, root: Path) -> None:
    assert "does not exist" in refusal(locator, str(root / "missing.csv"))


@pytest.mark.parametrize(
    "reference",
    [
        "train.csv",
        "datasets/train.csv",
        "./train.csv",
        "http://x",
        "https://example.com/train.csv",
        "ftp://x/train.csv",
        "gs://bucket/train.csv",
        "file://otherhost/etc/passwd",
        "",
        "/etc/passwd\0.csv",
    ],
)
def test_relative_paths_and_other_schemes_are_refused(locator: DatasetLocator, reference: str) -> None:
    refusal(locator, reference)


def test_s3_is_refused_when_not_configured(locator: DatasetLocator) -> None:
    assert "not enabled" in refusal(locator, "s3://bucket/train.csv")


def _upload(store: DatasetStore, tenant: str, name: str, data: bytes) -> Path:
    writer = store.writer(tenant, name, "csv", 1 << 20)
    writer.write(data)
    return writer.commit().path


def test_an_uploaded_dataset_resolves_for_its_tenant(locator: DatasetLocator, store: DatasetStore) -> None:
    path = _upload(store, "acme", "iris", b"a,label\n1,x\n")
    assert locator.resolve("acme", "dataset://iris", FIELD) == str(path)


def test_another_tenants_upload_is_not_found(locator: DatasetLocator, store: DatasetStore) -> None:
    _upload(store, "acme", "iris", b"a,label\n1,x\n")
    assert "no uploaded dataset" in refusal(locator, "dataset://iris", tenant="globex")


@pytest.mark.parametrize("name", ["../acme/iris", "..", "", "iris/../../x"])
def test_an_upload_name_cannot_walk_the_store(
    locator: DatasetLocator, store: DatasetStore, name: str
) -> None:
    _upload(store, "acme", "iris", b"a,label\n1,x\n")
    refusal(locator, f"dataset://{name}", tenant="globex")


def test_uploads_cannot_be_named_by_path_even_under_a_root(tmp_path: Path, store: DatasetStore) -> None:
    """With a root above the store, a path would otherwise reach any tenant's uploads, or tell whether
    one exists."""
    path = _upload(store, "acme", "iris", b"a,label\n1,x\n")
    locator = DatasetLocator([tmp_path], store)
    message = refusal(locator, str(path), tenant="globex")
    assert "not an existing file or folder inside the dataset folders" in message
    assert refusal(locator, str(store.root / "acme" / "nothing"), tenant="globex") == message
    assert refusal(locator, str(path), tenant="acme") == message


def test_fingerprint_of_a_file_is_its_sha256_and_size(locator: DatasetLocator, root: Path) -> None:
    data = (root / "train.csv").read_bytes()
    uri = locator.resolve("acme", str(root / "train.csv"), FIELD)
    assert locator.fingerprint(uri) == {
        "uri": uri,
        "sha256": hashlib.sha256(data).hexdigest(),
        "sizeBytes": len(data),
    }


def test_fingerprint_of_a_file_larger_than_one_chunk(locator: DatasetLocator, root: Path) -> None:
    data = bytes(range(256)) * 9000  # a little over 2 MiB: several 1 MiB chunks
    (root / "big.bin").write_bytes(data)
    uri = locator.resolve("acme", str(root / "big.bin"), FIELD)
    assert locator.fingerprint(uri)["sha256"] == hashlib.sha256(data).hexdigest()


def _image_folder(root: Path) -> Path:
    folder = root / "images"
    for relative, data in {"cat/1.png": b"one", "cat/2.png": b"two", "dog/1.png": b"three"}.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_bytes(data)
    return folder


def test_fingerprint_of_a_folder_hashes_its_sorted_file_list(locator: DatasetLocator, root: Path) -> None:
    folder = _image_folder(root)
    lines = "".join(
        f"{relative}\0{hashlib.sha256(data).hexdigest()}\n"
        for relative, data in [("cat/1.png", b"one"), ("cat/2.png", b"two"), ("dog/1.png", b"three")]
    )
    fingerprint = locator.fingerprint(locator.resolve("acme", str(folder), FIELD))
    assert fingerprint["sha256"] == hashlib.sha256(lines.encode()).hexdigest()
    assert fingerprint["sizeBytes"] == len(b"onetwothree")


def test_fingerprint_of_a_folder_changes_when_a_file_is_renamed(locator: DatasetLocator, root: Path) -> None:
    folder = _image_folder(root)
    uri = locator.resolve("acme", str(folder), FIELD)
    before = locator.fingerprint(uri)["sha256"]
    (folder / "dog" / "1.png").rename(folder / "cat" / "3.png")
    assert locator.fingerprint(uri)["sha256"] != before


def test_storage_options_are_empty_for_local_files(locator: DatasetLocator, root: Path) -> None:
    assert locator.storage_options(str(root / "train.csv")) == {}


def test_fingerprint_refuses_a_link_inside_a_folder_pointing_outside(
    locator: DatasetLocator, root: Path, outside: Path
) -> None:
    """The locator confined the folder; a link inside it must not read files elsewhere."""
    folder = _image_folder(root)
    (folder / "cat" / "3.png").symlink_to(outside)
    with pytest.raises(DatasetError, match=r"cat/3\.png links outside"):
        locator.fingerprint(locator.resolve("acme", str(folder), FIELD))
