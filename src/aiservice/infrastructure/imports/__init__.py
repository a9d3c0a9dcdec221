"""Reading MLflow and Hugging Face-style model folders into artifacts our runtimes serve (ADR 0031)."""

from aiservice.infrastructure.imports.folders import FolderReader

__all__ = ["FolderReader"]
