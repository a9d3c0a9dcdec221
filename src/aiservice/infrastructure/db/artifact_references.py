"""Which artifact store keys the database still refers to, across every tenant (for the sweeper)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from aiservice.infrastructure.db.tables import model_versions
from aiservice.infrastructure.db.tenant_erasure import version_keys


class SqlAlchemyArtifactReferences:
    """Implements ``ArtifactReferences``: each version's artifact and its compiled ONNX form, soft-deleted
    models' versions included (their bytes go when the model is purged)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def referenced_keys(self) -> set[str]:
        query = sa.select(model_versions.c.artifact_key, model_versions.c.serving)
        with self._engine.connect() as conn:
            return set(version_keys(conn.execute(query)))
