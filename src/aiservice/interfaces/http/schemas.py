"""HTTP bodies: camelCase JSON at the edge, mapped to and from domain objects here."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from aiservice.domain.models import MAX_VERSION, Alias, Model, ModelVersion, Stage
from aiservice.domain.schemas import derived_schema

T = TypeVar("T")


class ApiModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class ModelCreate(ApiModel):
    name: str = Field(min_length=1, max_length=128, examples=["churn-classifier"])
    description: str = Field(default="", max_length=10_000)
    framework: str = Field(
        min_length=1,
        max_length=20,
        examples=["sklearn"],
        description="An installed framework (its runtime plugin's name): sklearn, xgboost, lightgbm, ...",
    )
    category: str | None = Field(default=None, max_length=100, examples=["classification"])
    configuration: dict[str, Any] = Field(default_factory=dict)
    input_schema: dict[str, Any] = Field(default_factory=dict)
    output_schema: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list, max_length=50)


class ModelPatch(ApiModel):
    description: str | None = Field(default=None, max_length=10_000)
    category: str | None = Field(default=None, max_length=100)
    configuration: dict[str, Any] | None = None
    input_schema: dict[str, Any] | None = None
    output_schema: dict[str, Any] | None = None
    tags: list[str] | None = Field(default=None, max_length=50)

    @model_validator(mode="after")
    def _only_category_may_be_null(self) -> ModelPatch:
        nulls = [n for n in self.model_fields_set if n != "category" and getattr(self, n) is None]
        if nulls:
            raise ValueError(f"{', '.join(sorted(nulls))} cannot be null; omit a field to leave it unchanged")
        return self


class ModelOut(ApiModel):
    id: str
    name: str
    description: str
    framework: str
    category: str | None
    configuration: dict[str, Any]
    input_schema: dict[str, Any]
    output_schema: dict[str, Any]
    tags: list[str]
    latest_version: int | None
    created_by: str | None
    created_at: datetime
    updated_at: datetime
    aliases: dict[str, int] | None = None

    @classmethod
    def of(cls, model: Model, aliases: list[Alias] | None = None) -> ModelOut:
        return cls(
            id=model.id,
            name=model.name,
            description=model.description,
            framework=model.framework,
            category=model.category,
            configuration=model.configuration,
            input_schema=model.input_schema,
            output_schema=model.output_schema,
            tags=model.tags,
            latest_version=model.latest_version,
            created_by=model.created_by,
            created_at=model.created_at,
            updated_at=model.updated_at,
            aliases={a.name: a.version for a in aliases} if aliases is not None else None,
        )


class ArtifactOut(ApiModel):
    digest: str = Field(description="SHA-256 of the artifact bytes, hex")
    size_bytes: int
    filename: str
    media_type: str


class VersionOut(ApiModel):
    id: str
    model_id: str
    version: int
    description: str
    stage: Stage
    stage_changed_at: datetime | None
    metrics: dict[str, Any]
    params: dict[str, Any]
    source_run: str | None
    artifact: ArtifactOut
    created_by: str | None
    created_at: datetime
    signature: dict[str, Any] | None = Field(
        default=None, description="What the runtime reported when the upload was inspected"
    )
    input_schema: dict[str, Any] | None = Field(
        default=None,
        description="The tabular schema this version's own named columns give (names, types, known "
        "categories, and nullable where the model answered with the column missing at upload); a model "
        "that declares no inputSchema is served with it",
    )
    serving: dict[str, Any] = Field(
        default_factory=dict,
        description="Which form serves (native or compiled ONNX), why, and the checks made",
    )
    lineage: dict[str, Any] = Field(
        default_factory=dict,
        description="Where the version came from: the training job and its datasets' fingerprints",
    )
    configuration: dict[str, Any] = Field(
        default_factory=dict,
        description="What this artifact needs on top of the model's configuration "
        "(a trained network's classes)",
    )

    @classmethod
    def of(cls, v: ModelVersion) -> VersionOut:
        return cls(
            id=v.id,
            model_id=v.model_id,
            version=v.version,
            description=v.description,
            stage=v.stage,
            stage_changed_at=v.stage_changed_at,
            metrics=v.metrics,
            params=v.params,
            source_run=v.source_run,
            artifact=ArtifactOut(
                digest=v.artifact.digest,
                size_bytes=v.artifact.size_bytes,
                filename=v.artifact.filename,
                media_type=v.artifact.media_type,
            ),
            created_by=v.created_by,
            created_at=v.created_at,
            signature=v.signature.to_json() if v.signature else None,
            input_schema=derived.to_json() if (derived := derived_schema(v.signature)) else None,
            serving={k: val for k, val in v.serving.to_json().items() if k != "onnx"}
            | ({"onnxSizeBytes": v.serving.onnx.size_bytes} if v.serving.onnx is not None else {}),
            lineage=v.lineage,
            configuration=v.configuration,
        )


class VersionMetadataIn(ApiModel):
    """The optional ``metadata`` form field of an upload, as a JSON object."""

    description: str = Field(default="", max_length=10_000)
    metrics: dict[str, float] = Field(default_factory=dict)
    params: dict[str, Any] = Field(default_factory=dict)
    source_run: str | None = Field(default=None, max_length=400)


class StageChange(ApiModel):
    stage: Stage
    archive_existing: bool = False


class AliasSet(ApiModel):
    version: int = Field(ge=1, le=MAX_VERSION)


class AliasOut(ApiModel):
    alias: str
    version: int
    updated_at: datetime

    @classmethod
    def of(cls, a: Alias) -> AliasOut:
        return cls(alias=a.name, version=a.version, updated_at=a.updated_at)


class ResolvedOut(ApiModel):
    reference: str
    model: ModelOut
    version: VersionOut


class PageOut(ApiModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(description="Pass as ?cursor= to get the next page; null on the last")
