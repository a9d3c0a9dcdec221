"""Uploaded datasets: streamed in, hashed, bounded, committed atomically, and kept apart per tenant."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from aiservice.domain.errors import Conflict, InvalidInput, PayloadTooLarge
from aiservice.infrastructure.datasets import DatasetStore, StoredDataset

DATA = b"a,label\n" + b"1,x\n" * 5000


@pytest.fixture
def store(tmp_path: Path) -> DatasetStore:
    return DatasetStore(tmp_path / "uploaded-datasets")


def upload(
    store: DatasetStore, name: str = "iris", tenant: str = "acme", data: bytes = DATA
) -> StoredDataset:
    writer = store.writer(tenant, name, "csv", 1 << 20)
    for start in range(0, len(data), 7000):
        writer.write(data[start : start + 7000])
    return writer.commit()


def visible_files(store: DatasetStore) -> list[str]:
    return sorted(str(p.relative_to(store.root)) for p in store.root.rglob("*") if p.is_file())


def test_a_committed_upload_keeps_its_bytes_hash_and_size(store: DatasetStore) -> None:
    stored = upload(store)
    assert stored.path.read_bytes() == DATA
    assert (stored.name, stored.format, stored.size_bytes) == ("iris", "csv", len(DATA))
    assert stored.sha256 == hashlib.sha256(DATA).hexdigest()


def test_get_returns_what_commit_returned(store: DatasetStore) -> None:
    stored = upload(store)
    assert store.get("acme", "iris") == stored


def test_get_of_an_unknown_name_is_none(store: DatasetStore) -> None:
    assert store.get("acme", "nothing") is None


def test_list_returns_a_tenants_datasets_by_name(store: DatasetStore) -> None:
    upload(store, "b")
    upload(store, "a")
    assert [dataset.name for dataset in store.list("acme")] == ["a", "b"]


def test_nothing_is_visible_before_commit(store: DatasetStore) -> None:
    writer = store.writer("acme", "iris", "csv", 1 << 20)
    writer.write(DATA)
    assert store.get("acme", "iris") is None
    assert store.list("acme") == []
    writer.commit()
    assert store.get("acme", "iris") is not None


def test_abort_leaves_nothing_behind(store: DatasetStore) -> None:
    writer = store.writer("acme", "iris", "csv", 1 << 20)
    writer.write(DATA)
    writer.abort()
    assert store.get("acme", "iris") is None
    assert visible_files(store) == []


def test_a_writer_left_by_an_exception_is_aborted(store: DatasetStore) -> None:
    with pytest.raises(RuntimeError), store.writer("acme", "iris", "csv", 1 << 20) as writer:
        writer.write(DATA)
        raise RuntimeError("the client went away")
    assert visible_files(store) == []


def test_delete_removes_a_dataset(store: DatasetStore) -> None:
    stored = upload(store)
    assert store.delete("acme", "iris") is True
    assert store.get("acme", "iris") is None
    assert not stored.path.exists()
    assert store.delete("acme", "iris") is False


def test_a_duplicate_name_is_a_conflict(store: DatasetStore) -> None:
    upload(store)
    with pytest.raises(Conflict):
        store.writer("acme", "iris", "csv", 1 << 20)


def test_of_two_concurrent_uploads_of_one_name_only_the_first_commit_wins(store: DatasetStore) -> None:
    first = store.writer("acme", "iris", "csv", 1 << 20)
    second = store.writer("acme", "iris", "csv", 1 << 20)
    first.write(b"a,label\n1,x\n")
    second.write(b"a,label\n2,y\n")
    first.commit()
    with pytest.raises(Conflict):
        second.commit()
    assert store.list("acme")[0].path.read_bytes() == b"a,label\n1,x\n"
    assert visible_files(store) == ["acme/iris/.meta.json", "acme/iris/iris"]


def test_an_upload_over_the_limit_is_refused_and_removed(store: DatasetStore) -> None:
    writer = store.writer("acme", "iris", "csv", 100)
    writer.write(b"x" * 100)
    with pytest.raises(PayloadTooLarge, match="limit of 100 bytes"):
        writer.write(b"x")
    assert store.get("acme", "iris") is None
    assert visible_files(store) == []


@pytest.mark.parametrize("name", ["", ".", "..", ".hidden", "a/b", "../x", "a b", "x" * 129, "é", "iris\n"])
def test_bad_names_are_refused(store: DatasetStore, name: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        store.writer("acme", name, "csv", 100)
    assert caught.value.errors[0].field == "name"


def test_an_unknown_format_is_refused(store: DatasetStore) -> None:
    with pytest.raises(InvalidInput) as caught:
        store.writer("acme", "iris", "xlsx", 100)
    assert caught.value.errors[0].field == "format"


@pytest.mark.parametrize("tenant", ["", "..", "../acme", "Acme", "a/b", "acme\n"])
def test_bad_tenant_ids_never_become_paths(store: DatasetStore, tenant: str) -> None:
    with pytest.raises(ValueError, match="invalid tenant id"):
        store.list(tenant)


def test_tenants_do_not_see_each_others_datasets(store: DatasetStore) -> None:
    upload(store, "iris", tenant="acme")
    assert store.get("globex", "iris") is None
    assert store.list("globex") == []
    assert store.delete("globex", "iris") is False
    assert store.get("acme", "iris") is not None


def test_tenants_may_use_the_same_name(store: DatasetStore) -> None:
    upload(store, "iris", tenant="acme", data=b"a,label\n1,x\n")
    upload(store, "iris", tenant="globex", data=b"a,label\n2,y\n")
    acme, globex = store.get("acme", "iris"), store.get("globex", "iris")
    assert acme is not None and globex is not None
    assert acme.sha256 != globex.sha256


def test_datasets_survive_a_new_store_on_the_same_root(store: DatasetStore) -> None:
    stored = upload(store)
    assert DatasetStore(store.root).get("acme", "iris") == stored
