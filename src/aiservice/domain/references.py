"""Model references as users type them: ``name``, ``id``, ``name:3``, ``name@alias``, ``name@production``."""

from __future__ import annotations

from dataclasses import dataclass

from aiservice.domain.errors import FieldError, InvalidInput
from aiservice.domain.models import MAX_VERSION, UUID_SHAPE


@dataclass(frozen=True)
class ModelReference:
    """What a reference names; resolving it to a version is the registry's job."""

    model: str
    version: int | None = None
    alias: str | None = None  # an alias, a stage name, or "latest"

    @property
    def is_id(self) -> bool:
        return bool(UUID_SHAPE.match(self.model))

    @classmethod
    def parse(cls, text: str, field_name: str = "path.model") -> ModelReference:
        def bad(why: str) -> InvalidInput:
            return InvalidInput(
                f"Model reference {text!r} is not valid: {why}. Use NAME, ID, NAME:VERSION or NAME@ALIAS.",
                errors=[FieldError(field_name, why)],
            )

        if not text:
            raise bad("it is empty")
        if "@" in text:
            model, _, alias = text.partition("@")
            if not model or not alias:
                raise bad("both the model and the alias must be given")
            return cls(model=model, alias=alias)
        if ":" in text:
            model, _, number = text.partition(":")
            # int() refuses some digits isdigit() takes, and numbers of thousands of digits
            decimal = number.isascii() and number.isdigit() and len(number) <= 10
            if not model or not decimal or not 1 <= int(number) <= MAX_VERSION:
                raise bad("the version must be a positive integer")
            return cls(model=model, version=int(number))
        return cls(model=text)
