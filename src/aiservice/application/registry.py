"""Model use cases: register, find, list, change and delete models of the caller's tenant."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiservice.application.audit import note_changes
from aiservice.application.frameworks import FrameworkCatalog
from aiservice.application.job_endings import cancel_job
from aiservice.application.ports import Clock, ModelQuery, UnitOfWork, UnitOfWorkFactory
from aiservice.application.quotas import admit_model
from aiservice.domain.errors import Conflict, NotFound
from aiservice.domain.models import UUID_SHAPE, JsonObject, Model
from aiservice.domain.pagination import Page
from aiservice.domain.schemas import parse_input_schema, parse_output_schema
from aiservice.domain.tenancy import Permission, Principal


@dataclass(frozen=True)
class NewModel:
    name: str
    framework: str  # checked against the installed frameworks
    description: str = ""
    category: str | None = None
    configuration: JsonObject = field(default_factory=dict)
    input_schema: JsonObject = field(default_factory=dict)
    output_schema: JsonObject = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)


def find_model(uow: UnitOfWork, ident: str, caller: Principal | None = None) -> Model:
    """A model by id or by name, within the unit of work's tenant; NotFound otherwise.

    Another tenant's model is NotFound too, so ids never leak across tenants; so is a model outside
    the ``caller``'s reach (an API key limited to other models), so its existence does not leak either.
    """
    model = uow.models.get(ident) if UUID_SHAPE.match(ident) else uow.models.get_by_name(ident)
    if model is None or (caller is not None and not caller.sees_model(model.id)):
        raise NotFound(f"No model {ident!r} exists.", extra={"model": ident})
    return model


class ModelRegistry:
    def __init__(
        self,
        uow: UnitOfWorkFactory,
        clock: Clock,
        frameworks: FrameworkCatalog,
        wake_runner: Callable[[], None] = lambda: None,
    ) -> None:
        self._uow = uow
        self._clock = clock
        self._frameworks = frameworks  # a new model names one of these
        self._wake_runner = wake_runner  # a cancelled job's worker stops at the runner's next look

    def create_model(self, principal: Principal, spec: NewModel) -> Model:
        principal.require(Permission.MODEL_WRITE)
        framework = self._frameworks.require(spec.framework, "body.framework")
        parse_input_schema(spec.input_schema)
        parse_output_schema(spec.output_schema)
        with self._uow(principal.tenant_id) as uow:
            admit_model(uow, framework)  # locks the tenant's row until commit
            existing = uow.models.get_by_name(spec.name)
            if existing is not None:
                raise _duplicate(spec.name, existing.id)
            model = Model.register(
                tenant_id=principal.tenant_id,
                name=spec.name,
                framework=framework,
                now=self._clock(),
                description=spec.description,
                category=spec.category,
                configuration=spec.configuration,
                input_schema=spec.input_schema,
                output_schema=spec.output_schema,
                tags=_unique(spec.tags),
                created_by=principal.subject,
            )
            uow.models.add(model)
            uow.commit()
            return model

    def get_model(self, principal: Principal, reference: str) -> Model:
        principal.require(Permission.MODEL_READ)
        with self._uow(principal.tenant_id, writes=False) as uow:
            return find_model(uow, reference, principal)

    def list_models(self, principal: Principal, query: ModelQuery) -> Page[Model]:
        principal.require(Permission.MODEL_READ)
        with self._uow(principal.tenant_id, writes=False) as uow:
            page = uow.models.search(query)
        if principal.model_ids is None:
            return page
        # A key limited to some models lists only those (a page may come out shorter than asked).
        return Page([m for m in page.items if principal.sees_model(m.id)], page.next_cursor)

    def update_model(self, principal: Principal, reference: str, changes: dict[str, Any]) -> Model:
        principal.require(Permission.MODEL_WRITE)
        if "tags" in changes:
            changes = {**changes, "tags": _unique(changes["tags"])}
        if "input_schema" in changes:
            parse_input_schema(changes["input_schema"])
        if "output_schema" in changes:
            parse_output_schema(changes["output_schema"])
        with self._uow(principal.tenant_id) as uow:
            model = find_model(uow, reference, principal)
            before = {name: getattr(model, name, None) for name in changes}
            if changed := model.update(changes, self._clock()):
                note_changes(before, {name: getattr(model, name) for name in changed})
                uow.models.save(model)
                uow.commit()
            return model

    def delete_model(self, principal: Principal, reference: str) -> None:
        """Soft delete: the model disappears from every query; its artifacts stay until a purge. Its
        queued and running training jobs are cancelled with it: they could register nothing."""
        principal.require(Permission.MODEL_DELETE)
        now = self._clock()
        with self._uow(principal.tenant_id) as uow:
            model = find_model(uow, reference, principal)
            if deployed := uow.deployments.of_model(model.id):
                names = sorted(d.name for d in deployed)
                raise Conflict(
                    f"Model {model.name!r} serves deployments {names}; delete them first.",
                    code="model-deployed",
                    extra={"deployments": names},
                )
            model.delete(now)
            uow.models.save(model)
            jobs = [job for job in uow.jobs.unfinished() if job.model_id == model.id]
            for job in jobs:
                cancel_job(uow, job, now)
            uow.commit()
        if jobs:
            self._wake_runner()


def _duplicate(name: str, existing_id: str) -> Conflict:
    return Conflict(
        f"A model named {name!r} already exists in this tenant.",
        extra={"existingId": existing_id},
    )


def _unique(tags: list[str]) -> list[str]:
    return list(dict.fromkeys(tags))
