"""In-memory adapters of the ports, for fast use-case tests. Scoping by tenant is kept as strictly as
the SQL adapters keep it: every lookup is keyed by the unit of work's tenant."""

from __future__ import annotations

import copy
import hashlib
import io
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Self

from aiservice.application.ports import LoadSpec, ModelQuery, StoredArtifact
from aiservice.domain.errors import ArtifactCorrupt, PayloadTooLarge
from aiservice.domain.events import DomainEvent
from aiservice.domain.models import Alias, Model, ModelVersion, Stage
from aiservice.domain.pagination import Page
from aiservice.domain.signature import Signature, TensorSpec
from aiservice.domain.tenancy import Tenant
from aiservice.domain.training import TrainingJob


@dataclass
class InMemoryDatabase:
    models: dict[tuple[str, str], Model] = field(default_factory=dict)
    versions: dict[tuple[str, str, int], ModelVersion] = field(default_factory=dict)
    aliases: dict[tuple[str, str, str], Alias] = field(default_factory=dict)
    tenants: dict[str, Tenant] = field(default_factory=dict)
    jobs: dict[tuple[str, str], TrainingJob] = field(default_factory=dict)
    outbox: list[DomainEvent] = field(default_factory=list)


class _Models:
    def __init__(self, data: InMemoryDatabase, tenant: str) -> None:
        self.data, self.tenant, self.seen = data, tenant, list[Model]()

    def add(self, model: Model) -> None:
        self.data.models[(self.tenant, model.id)] = model
        self.seen.append(model)

    def save(self, model: Model) -> None:
        self.add(model)

    def get(self, model_id: str) -> Model | None:
        model = self.data.models.get((self.tenant, model_id))
        return copy.deepcopy(model) if model and model.deleted_at is None else None

    def get_by_name(self, name: str) -> Model | None:
        found = [m for (t, _), m in self.data.models.items() if t == self.tenant and m.name == name]
        return next((copy.deepcopy(m) for m in found if m.deleted_at is None), None)

    def search(self, query: ModelQuery) -> Page[Model]:
        live = [m for (t, _), m in self.data.models.items() if t == self.tenant and m.deleted_at is None]
        return Page(items=sorted(live, key=lambda m: m.created_at)[: query.limit], next_cursor=None)

    def deleted_before(self, cutoff: datetime) -> list[Model]:
        return [
            m
            for (t, _), m in self.data.models.items()
            if t == self.tenant and m.deleted_at is not None and m.deleted_at < cutoff
        ]

    def erase(self, model_id: str) -> list[str]:
        keys = [
            v.artifact.key for (t, m, _), v in self.data.versions.items() if (t, m) == (self.tenant, model_id)
        ]
        self.data.versions = {k: v for k, v in self.data.versions.items() if k[:2] != (self.tenant, model_id)}
        self.data.aliases = {k: a for k, a in self.data.aliases.items() if k[:2] != (self.tenant, model_id)}
        del self.data.models[(self.tenant, model_id)]
        return keys

    def next_version_number(self, model_id: str) -> int:
        model = self.data.models[(self.tenant, model_id)]
        model.latest_version = (model.latest_version or 0) + 1
        return model.latest_version


class _Versions:
    def __init__(self, data: InMemoryDatabase, tenant: str) -> None:
        self.data, self.tenant = data, tenant

    def add(self, version: ModelVersion) -> None:
        self.data.versions[(self.tenant, version.model_id, version.version)] = version

    def get(self, model_id: str, number: int) -> ModelVersion | None:
        return self.data.versions.get((self.tenant, model_id, number))

    def page(self, model_id: str, limit: int, cursor: str | None) -> Page[ModelVersion]:
        mine = [v for (t, m, _), v in self.data.versions.items() if (t, m) == (self.tenant, model_id)]
        return Page(items=sorted(mine, key=lambda v: -v.version)[:limit], next_cursor=None)

    def in_stage(self, model_id: str, stage: Stage) -> list[ModelVersion]:
        return [v for v in self.page(model_id, 10**6, None).items if v.stage == stage]

    def set_stage(self, version: ModelVersion) -> None:
        self.add(version)

    def set_serving(self, version: ModelVersion) -> None:
        self.add(version)


class _Aliases:
    def __init__(self, data: InMemoryDatabase, tenant: str) -> None:
        self.data, self.tenant = data, tenant

    def get(self, model_id: str, name: str) -> Alias | None:
        return self.data.aliases.get((self.tenant, model_id, name))

    def set(self, alias: Alias) -> None:
        self.data.aliases[(self.tenant, alias.model_id, alias.name)] = alias

    def delete(self, model_id: str, name: str) -> None:
        self.data.aliases.pop((self.tenant, model_id, name), None)

    def for_model(self, model_id: str) -> list[Alias]:
        return [a for (t, m, _), a in self.data.aliases.items() if (t, m) == (self.tenant, model_id)]


class _Tenants:
    def __init__(self, data: InMemoryDatabase) -> None:
        self.data = data

    def get(self, tenant_id: str, *, for_update: bool = False) -> Tenant | None:
        return self.data.tenants.get(tenant_id)

    def add(self, tenant: Tenant) -> None:
        self.data.tenants[tenant.id] = tenant

    def save(self, tenant: Tenant) -> None:
        self.data.tenants[tenant.id] = tenant

    def all_ids(self) -> list[str]:
        return sorted(self.data.tenants)

    def page(self, limit: int, cursor: str | None) -> Page[Tenant]:
        return Page([self.data.tenants[t] for t in self.all_ids()][:limit], None)


class _Jobs:
    """Only what the registry's use cases touch: a model's unfinished jobs, and ending them."""

    def __init__(self, data: InMemoryDatabase, tenant: str) -> None:
        self.data, self.tenant = data, tenant

    def unfinished(self) -> list[TrainingJob]:
        return [j for (t, _), j in self.data.jobs.items() if t == self.tenant and not j.status.finished]

    def save(self, job: TrainingJob) -> None:
        self.data.jobs[(self.tenant, job.id)] = job

    def append_event(self, job_id: str, type: str, data: dict[str, Any], at: datetime) -> int:
        return 1


class _Usage:
    def __init__(self, data: InMemoryDatabase, tenant: str) -> None:
        self.data, self.tenant = data, tenant

    def _live_versions(self) -> list[ModelVersion]:
        live = {m for (t, m), model in self.data.models.items() if t == self.tenant and not model.deleted_at}
        return [v for (t, m, _), v in self.data.versions.items() if t == self.tenant and m in live]

    def models(self) -> int:
        return sum(1 for (t, _), m in self.data.models.items() if t == self.tenant and not m.deleted_at)

    def versions(self, model_id: str) -> int:
        return sum(1 for (t, m, _) in self.data.versions if (t, m) == (self.tenant, model_id))

    def most_versions(self) -> int:
        counts: dict[str, int] = {}
        for v in self._live_versions():
            counts[v.model_id] = counts.get(v.model_id, 0) + 1
        return max(counts.values(), default=0)

    def artifact_bytes(self) -> int:
        return sum(v.artifact.size_bytes for v in self._live_versions())

    def active_jobs(self) -> int:
        return 0  # the in-memory database keeps no training jobs


class _Deployments:
    """The registry asks only whether a model serves a deployment: none here."""

    def of_model(self, model_id: str) -> list[Any]:
        return []


class InMemoryUnitOfWork:
    """Changes go to a copy of the database and replace it only on commit."""

    def __init__(self, db: InMemoryDatabase, tenant_id: str) -> None:
        self.db = db
        self.tenant_id = tenant_id
        self.committed = False

    def __enter__(self) -> Self:
        self._work = copy.deepcopy(self.db)
        self.models = _Models(self._work, self.tenant_id)
        self.versions = _Versions(self._work, self.tenant_id)
        self.aliases = _Aliases(self._work, self.tenant_id)
        self.tenants = _Tenants(self._work)
        self.usage = _Usage(self._work, self.tenant_id)
        self.jobs = _Jobs(self._work, self.tenant_id)
        self.deployments = _Deployments()
        self._events: list[DomainEvent] = []
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def record(self, *events: DomainEvent) -> None:
        self._events.extend(events)

    def commit(self) -> None:
        for model in self.models.seen:
            self._work.outbox.extend(model.events)
            model.events.clear()
        self._work.outbox.extend(self._events)
        self._events = []
        self.db.__dict__.update(copy.deepcopy(self._work).__dict__)
        self.committed = True


class InMemoryUnitOfWorkFactory:
    def __init__(self) -> None:
        self.db = InMemoryDatabase()

    def __call__(self, tenant_id: str, *, writes: bool = True) -> InMemoryUnitOfWork:
        return InMemoryUnitOfWork(self.db, tenant_id)


class _Writer:
    def __init__(self, store: InMemoryArtifactStore, key: str, max_bytes: int) -> None:
        self.store, self.key, self.max, self.buffer = store, key, max_bytes, bytearray()

    def write(self, chunk: bytes | memoryview) -> None:
        if len(self.buffer) + len(chunk) > self.max:
            raise PayloadTooLarge("too large", extra={"limit": self.max})
        self.buffer += chunk

    def commit(self) -> StoredArtifact:
        self.store.blobs[self.key] = bytes(self.buffer)
        return StoredArtifact(self.key, hashlib.sha256(self.buffer).hexdigest(), len(self.buffer))

    def abort(self) -> None:
        self.buffer.clear()


class InMemoryArtifactStore:
    def __init__(self) -> None:
        self.blobs: dict[str, bytes] = {}

    def writer(self, key: str, max_bytes: int) -> _Writer:
        return _Writer(self, key, max_bytes)

    def open(self, key: str, digest: str) -> BinaryIO:
        data = self.blobs.get(key)
        if data is None or hashlib.sha256(data).hexdigest() != digest:
            raise ArtifactCorrupt("corrupt")
        return io.BytesIO(data)

    def delete(self, key: str) -> None:
        self.blobs.pop(key, None)

    def check_writable(self) -> None:
        return None

    def local_path(self, key: str, digest: str, *, verify: bool = True) -> Path:
        return Path("/in-memory") / key  # not a file: only fakes (FakeInspector) may be handed it


class FakeInspector:
    """Reports a fixed signature, or refuses with the error it was given."""

    def __init__(self, signature: Signature | None = None, error: Exception | None = None) -> None:
        self.signature = signature or Signature(
            inputs=(TensorSpec("input", "float32", (-1, 4)),), task="classification", classes=(0, 1, 2)
        )
        self.error = error
        self.seen: list[LoadSpec] = []

    def inspect(self, artifact: Path, spec: LoadSpec) -> Signature:
        self.seen.append(spec)
        if self.error is not None:
            raise self.error
        return self.signature
