"""What the installed framework plugins can do, as the use cases see it: which names exist, which train,
stream, compile to ONNX. Bootstrap fills it from the runtime plugins (``infrastructure/runtimes``), so
no list of frameworks is written down anywhere else, and a new plugin changes these answers by itself.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from aiservice.domain.errors import FieldError, InvalidInput
from aiservice.domain.models import Framework


@dataclass(frozen=True)
class FrameworkTraits:
    """One installed plugin's answers; everything but the name defaults to "cannot"."""

    name: Framework
    trainable: bool = False  # training jobs can fit its models
    streaming: bool = False  # its trainer also takes data streamed batch by batch (larger than memory)
    epochs: bool = False  # its trainer works in epochs (a job reports them)
    data_parallel: bool = False  # its trainer spreads one job over several workers (on Ray)
    compilable: bool = False  # its versions are converted to ONNX and checked after upload


class FrameworkCatalog:
    """The installed plugins' traits by name (immutable; a plugin installed later needs a restart)."""

    def __init__(self, traits: Iterable[FrameworkTraits]) -> None:
        self._traits: dict[str, FrameworkTraits] = {}
        for trait in traits:
            self._traits.setdefault(str(trait.name), trait)

    @classmethod
    def of(cls, *names: str, **abilities: bool) -> FrameworkCatalog:
        """Plugins of these names, each with the same ``abilities`` (for tests and tools)."""
        return cls(FrameworkTraits(Framework(n), **abilities) for n in names)

    def names(self) -> list[str]:
        return sorted(self._traits)

    def get(self, name: str) -> FrameworkTraits | None:
        return self._traits.get(name)

    def with_trait(self, trait: str) -> list[str]:
        """The names whose plugin has ``trait`` ("trainable", "compilable"...), sorted."""
        return [name for name, traits in sorted(self._traits.items()) if getattr(traits, trait)]

    def has(self, name: str, trait: str) -> bool:
        traits = self._traits.get(name)
        return traits is not None and bool(getattr(traits, trait))

    def require(self, name: str, field: str) -> Framework:
        """``name`` as a framework when a plugin of that name is installed; else ``InvalidInput`` on
        ``field`` that lists the installed ones."""
        if name in self._traits:
            return self._traits[name].name
        known = ", ".join(self.names()) or "none"
        raise InvalidInput(
            f"No framework {name!r} is installed; installed frameworks: {known}.",
            errors=[FieldError(field, f"unknown framework {name!r}; one of: {known}")],
            extra={"frameworks": self.names()},
        )


NO_FRAMEWORKS = FrameworkCatalog(())
